//! The one place that turns our [`OutgoingMail`] into RFC 5322 bytes, with
//! mail-builder (the builder that pairs with mail-parser): encoded words,
//! folding within the line limits, `7bit`, quoted-printable or base64 as the
//! text needs, multipart for attachments. Every value from mail content is
//! sanitised (no CR, LF or other control characters) before it goes in.

use crate::core::classify::LOOP_HEADER;
use crate::core::model::Mailbox;
use crate::core::outgoing::{OutgoingMail, sanitize};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;

/// The mail as bytes; `loop_value` is the (signed) value of our loop header.
pub fn render(mail: &OutgoingMail, loop_value: &str) -> Vec<u8> {
    build(mail, Some(loop_value))
}

/// A message written on the web portal, as the mail the pipeline takes in:
/// no loop header of ours (it is not our mail) and nothing automatic.
pub fn render_submission(mail: &OutgoingMail) -> Vec<u8> {
    build(mail, None)
}

fn build(mail: &OutgoingMail, loop_value: Option<&str>) -> Vec<u8> {
    let mailbox = |m: &Mailbox| -> Address<'static> {
        let name = m.name.as_deref().map(sanitize).filter(|n| !n.is_empty());
        Address::new_address(name, sanitize(&m.email))
    };
    let id = |s: &str| sanitize(s).trim_matches(['<', '>']).to_string();
    let mut b = MessageBuilder::new()
        .date(Date::new(mail.date.as_second()))
        .from(mailbox(&mail.from))
        .to(Address::new_list(mail.to.iter().map(mailbox).collect()));
    if let Some(r) = &mail.reply_to {
        b = b.reply_to(Address::new_address(None::<String>, sanitize(r)));
    }
    b = b
        .subject(Text::new(sanitize(&mail.subject)))
        .message_id(MessageId::new(id(&mail.message_id)));
    if let Some(irt) = &mail.in_reply_to {
        b = b.in_reply_to(MessageId::new(id(irt)));
    }
    if !mail.references.is_empty() {
        b = b.references(MessageId::new_list(mail.references.iter().map(|r| id(r))));
    }
    if mail.auto_submitted {
        b = b
            .header("Auto-Submitted", Raw::new("auto-replied"))
            .header("X-Auto-Response-Suppress", Raw::new("All"))
            .header("Precedence", Raw::new("auto_reply"));
    }
    if let Some(loop_value) = loop_value {
        b = b
            .header(LOOP_HEADER, Raw::new(sanitize(loop_value)))
            .header("X-Postdesk-Ticket", Raw::new(mail.ticket.to_string()));
    }
    b = b.text_body(mail.body.replace("\r\n", "\n").replace('\n', "\r\n"));
    for a in &mail.attachments {
        b = b.attachment(sanitize(&a.content_type), sanitize(&a.name), a.data.as_slice());
    }
    b.write_to_vec().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::render;
    use crate::core::model::{Mailbox, TicketId};
    use crate::core::outgoing::{Attachment, OutgoingMail};

    fn mail() -> OutgoingMail {
        OutgoingMail {
            ticket: TicketId(5),
            purpose: "acknowledgement".into(),
            from: Mailbox::new(Some("Example Support".into()), "support@example.com"),
            to: vec![Mailbox::new(Some("Jörg \"J\" Müller".into()), "j@x.test")],
            reply_to: None,
            subject: "[Support #5] Hello\r\nBcc: evil@x.test".into(),
            body: "Grüße = hi".into(),
            message_id: "pd.5.n.s@example.com".into(),
            in_reply_to: Some("orig@x.test".into()),
            references: vec!["orig@x.test".into()],
            auto_submitted: true,
            date: "2026-11-23T12:00:00Z".parse().unwrap(),
            loop_value: "example.com".into(),
            attachments: Vec::new(),
        }
    }

    /// Read back through our own inbound adapter (mail-parser underneath).
    fn parsed(bytes: &[u8]) -> crate::core::model::InboundMessage {
        crate::adapters::inbound::parse(bytes, &crate::adapters::config::Limits::default()).unwrap()
    }

    #[test]
    fn every_header_we_set_round_trips_through_mail_parser() {
        let bytes = render(&mail(), "example.com; abc");
        let text = format!("\r\n{}", String::from_utf8(bytes.clone()).unwrap());
        assert!(!text.contains("\r\nBcc:"), "{text}");
        let m = parsed(&bytes);
        assert_eq!(m.subject, "[Support #5] Hello  Bcc: evil@x.test");
        assert_eq!(m.to, vec![Mailbox::new(Some("Jörg \"J\" Müller".into()), "j@x.test")]);
        assert_eq!(
            m.from,
            Some(Mailbox::new(Some("Example Support".into()), "support@example.com"))
        );
        assert_eq!(m.message_id.as_deref(), Some("pd.5.n.s@example.com"));
        assert_eq!(m.in_reply_to, vec!["orig@x.test"]);
        assert_eq!(m.references, vec!["orig@x.test"]);
        assert_eq!(m.date, Some("2026-11-23T12:00:00Z".parse().unwrap()));
        assert_eq!(m.text.trim_end(), "Grüße = hi");
        for (name, value) in [
            ("Auto-Submitted", "auto-replied"),
            ("X-Auto-Response-Suppress", "All"),
            ("Precedence", "auto_reply"),
            ("X-Postdesk-Loop", "example.com; abc"),
            ("X-Postdesk-Ticket", "5"),
            ("MIME-Version", "1.0"),
        ] {
            assert!(text.contains(&format!("\r\n{name}: {value}\r\n")), "{name}:\n{text}");
        }
        assert!(text.contains("\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n"), "{text}");
        assert!(
            text.contains("\r\nFrom: \"Example Support\" <support@example.com>\r\n"),
            "{text}"
        );
    }

    #[test]
    fn attachments_and_long_headers() {
        let mut m = mail();
        m.subject = format!("{} {}", "word ".repeat(2000), "x".repeat(5000));
        m.references = (0..50).map(|i| format!("{}{i}@x.test", "r".repeat(200))).collect();
        m.to = (0..40)
            .map(|i| Mailbox::new(Some(format!("Person {i}")), &format!("p{i}@x.test")))
            .collect();
        m.attachments = vec![Attachment {
            name: "steps \"1\".pdf".into(),
            content_type: "application/pdf".into(),
            data: b"%PDF-1.4 steps".to_vec(),
        }];
        let bytes = render(&m, "example.com; abc");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for line in text.split("\r\n") {
            assert!(line.len() <= 998, "a {}-character line", line.len());
        }
        let limits = crate::adapters::config::Limits {
            max_references: 100,
            ..Default::default()
        };
        let p = crate::adapters::inbound::parse(&bytes, &limits).unwrap();
        assert_eq!(p.to.len(), 40);
        assert_eq!(p.references.len(), 50);
        assert!(p.subject.starts_with("word word"), "{}", &p.subject[..40]);
        assert_eq!(p.attachment_parts.len(), 1);
        assert_eq!(p.attachment_parts[0].name, "steps \"1\".pdf");
        assert_eq!(p.attachment_parts[0].data, b"%PDF-1.4 steps");
        assert_eq!(p.text.trim_end(), "Grüße = hi");
    }
}
