//! Mail we send: the [`OutgoingMail`] value the core produces, the template
//! filler, and the one place that turns it into RFC 5322 bytes.
//!
//! Every header written from mail content is sanitised (no CR/LF); names and
//! subjects are RFC 2047 encoded when they are not ASCII.

use crate::classify::LOOP_HEADER;
use crate::model::{Mailbox, TicketId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One mail in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMail {
    /// The ticket it belongs to.
    pub ticket: TicketId,
    /// Why we send it: `acknowledgement`, ...
    pub purpose: String,
    /// From (the support address with the instance name).
    pub from: Mailbox,
    /// Recipients.
    pub to: Vec<Mailbox>,
    /// Reply-To, when replies should go to a ticket address.
    pub reply_to: Option<String>,
    /// Subject, with the ticket tag.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// Our signed Message-ID, without `<>`.
    pub message_id: String,
    /// The Message-ID this answers.
    pub in_reply_to: Option<String>,
    /// The thread's References.
    pub references: Vec<String>,
    /// Whether it is an automatic mail (`Auto-Submitted: auto-replied`).
    pub auto_submitted: bool,
    /// Date header.
    pub date: Timestamp,
    /// Value of our loop header.
    pub loop_value: String,
    /// Files to attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file attached to a mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name.
    pub name: String,
    /// MIME type, like `application/pdf`.
    pub content_type: String,
    /// The bytes (base64 in the outbox record).
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

mod base64_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::base64(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::base64_decode(&text).ok_or_else(|| serde::de::Error::custom("bad base64"))
    }
}

impl OutgoingMail {
    /// The mail as RFC 5322 bytes, CRLF line ends, quoted-printable UTF-8 body.
    pub fn render(&self) -> Vec<u8> {
        let mut h = String::new();
        let date = jiff::fmt::rfc2822::to_string(&self.date.to_zoned(jiff::tz::TimeZone::UTC))
            .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into());
        push(&mut h, "Date", &date);
        push(&mut h, "From", &format_mailbox(&self.from));
        let to: Vec<String> = self.to.iter().map(format_mailbox).collect();
        push(&mut h, "To", &to.join(", "));
        if let Some(r) = &self.reply_to {
            push(&mut h, "Reply-To", &format!("<{}>", sanitize(r)));
        }
        push(&mut h, "Subject", &encode_word(&self.subject));
        push(&mut h, "Message-ID", &format!("<{}>", sanitize(&self.message_id)));
        if let Some(irt) = &self.in_reply_to {
            push(&mut h, "In-Reply-To", &format!("<{}>", sanitize(irt)));
        }
        if !self.references.is_empty() {
            let refs: Vec<String> = self.references.iter().map(|r| format!("<{}>", sanitize(r))).collect();
            push(&mut h, "References", &refs.join("\r\n "));
        }
        if self.auto_submitted {
            push(&mut h, "Auto-Submitted", "auto-replied");
            push(&mut h, "X-Auto-Response-Suppress", "All");
            push(&mut h, "Precedence", "auto_reply");
        }
        push(&mut h, LOOP_HEADER, &sanitize(&self.loop_value));
        push(&mut h, "X-Postdesk-Ticket", &self.ticket.to_string());
        push(&mut h, "MIME-Version", "1.0");
        if self.attachments.is_empty() {
            push(&mut h, "Content-Type", "text/plain; charset=utf-8");
            push(&mut h, "Content-Transfer-Encoding", "quoted-printable");
            h.push_str("\r\n");
            h.push_str(&quoted_printable(&self.body));
            return h.into_bytes();
        }
        let boundary = format!("=_pd_{}", sanitize(&self.message_id).replace(['@', '<', '>', ' '], "_"));
        push(
            &mut h,
            "Content-Type",
            &format!("multipart/mixed; boundary=\"{boundary}\""),
        );
        h.push_str("\r\n");
        h.push_str(&format!("--{boundary}\r\n"));
        h.push_str("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
        h.push_str(&quoted_printable(&self.body));
        for a in &self.attachments {
            let name = sanitize(&a.name).replace(['"', '\\'], "_");
            let name = if name.is_ascii() {
                format!("\"{name}\"")
            } else {
                format!("\"{}\"", encode_word(&name))
            };
            h.push_str(&format!("--{boundary}\r\n"));
            h.push_str(&format!(
                "Content-Type: {}; name={name}\r\nContent-Disposition: attachment; filename={name}\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                sanitize(&a.content_type)
            ));
            let encoded = base64(&a.data);
            for chunk in encoded.as_bytes().chunks(76) {
                h.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
                h.push_str("\r\n");
            }
        }
        h.push_str(&format!("--{boundary}--\r\n"));
        h.into_bytes()
    }

    /// All recipient addresses.
    pub fn recipients(&self) -> Vec<String> {
        self.to.iter().map(|m| m.email.clone()).collect()
    }
}

/// Writes one header field, folded at white space so lines stay within 78
/// characters where they can (RFC 5322 2.2.3); values that come folded
/// already (`\r\n ` between parts) are written as they are.
fn push(h: &mut String, name: &str, value: &str) {
    h.push_str(name);
    h.push_str(": ");
    if value.contains("\r\n") || name.len() + 2 + value.len() <= 78 {
        h.push_str(value);
        h.push_str("\r\n");
        return;
    }
    let mut line_len = name.len() + 2;
    let mut first = true;
    for word in value.split(' ') {
        if !first {
            if line_len + 1 + word.len() > 78 {
                h.push_str("\r\n ");
                line_len = 1;
            } else {
                h.push(' ');
                line_len += 1;
            }
        }
        h.push_str(word);
        line_len += word.len();
        first = false;
    }
    h.push_str("\r\n");
}

/// Removes CR, LF and other control characters from a header value.
pub fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `"Name" <addr>`, the name encoded when needed.
pub fn format_mailbox(m: &Mailbox) -> String {
    let email = sanitize(&m.email);
    match &m.name {
        Some(name) if !name.trim().is_empty() => {
            let name = sanitize(name);
            if name.is_ascii() {
                let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{escaped}\" <{email}>")
            } else {
                format!("{} <{email}>", encode_word(&name))
            }
        }
        _ => format!("<{email}>"),
    }
}

/// RFC 2047 `=?UTF-8?B?...?=` words for non-ASCII text, and for ASCII text
/// with a word too long to fold (so no header line can pass 998 characters);
/// other ASCII passes (sanitised).
pub fn encode_word(text: &str) -> String {
    let text = sanitize(text);
    if text.is_ascii() && text.split(' ').all(|w| w.len() <= 70) {
        return text;
    }
    // Split into chunks of at most 42 bytes on char boundaries, so each word
    // stays under 75 characters and the first line under 78.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 42 {
            words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Decodes standard base64 (padding optional, white space ignored).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' => continue,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// Quoted-printable (RFC 2045) with CRLF line ends and soft breaks at 76.
pub fn quoted_printable(text: &str) -> String {
    let mut out = String::new();
    let normalized = text.replace("\r\n", "\n");
    for line in normalized.split('\n') {
        let mut len = 0;
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let enc = match b {
                b'=' => format!("={b:02X}"),
                b' ' | b'\t' if last => format!("={b:02X}"),
                33..=126 | b' ' | b'\t' => (b as char).to_string(),
                _ => format!("={b:02X}"),
            };
            if len + enc.len() > 75 {
                out.push_str("=\r\n");
                len = 0;
            }
            len += enc.len();
            out.push_str(&enc);
        }
        out.push_str("\r\n");
    }
    out
}

/// Values a template can use.
#[derive(Clone, Debug, Default)]
pub struct TemplateValues {
    /// `(placeholder, value)`, like `("ticket.id", "1042")`.
    pub values: Vec<(String, String)>,
}

impl TemplateValues {
    /// Adds a value.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.values.push((key.to_string(), value.into()));
        self
    }
}

/// Fills `{{placeholder}}`s; unknown placeholders are left as they are.
pub fn fill(template: &str, values: &TemplateValues) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = after[..end].trim();
                match values.values.iter().find(|(k, _)| k == key) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_sanitised_and_encoded() {
        let mail = OutgoingMail {
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
        };
        let text = String::from_utf8(mail.render()).unwrap();
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(
            text.contains("Subject: [Support #5] Hello  Bcc: evil@x.test\r\n"),
            "{text}"
        );
        assert!(text.contains("To: =?UTF-8?B?"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("X-Postdesk-Loop: example.com\r\n"));
        assert!(text.contains("Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n"), "{text}");
        assert!(text.ends_with("Gr=C3=BC=C3=9Fe =3D hi\r\n"), "{text}");
    }

    #[test]
    fn long_headers_are_folded_within_the_line_limit() {
        let mail = OutgoingMail {
            ticket: TicketId(5),
            purpose: "acknowledgement".into(),
            from: Mailbox::new(Some("Example Support".into()), "support@example.com"),
            to: (0..40)
                .map(|i| Mailbox::new(Some(format!("Person {i}")), &format!("p{i}@x.test")))
                .collect(),
            reply_to: None,
            subject: format!("{} {}", "word ".repeat(2000), "x".repeat(5000)),
            body: "hi".into(),
            message_id: "pd.5.n.s@example.com".into(),
            in_reply_to: None,
            references: (0..50).map(|i| format!("{}{i}@x.test", "r".repeat(200))).collect(),
            auto_submitted: true,
            date: "2026-11-23T12:00:00Z".parse().unwrap(),
            loop_value: "example.com".into(),
            attachments: Vec::new(),
        };
        let text = String::from_utf8(mail.render()).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        for line in head.split("\r\n") {
            assert!(line.len() <= 998, "{} characters: {}", line.len(), &line[..80]);
        }
        assert!(
            head.lines()
                .filter(|l| l.len() > 78)
                .all(|l| l.starts_with(" <r") || l.starts_with("References: <r")),
            "only lines of one long id exceed 78"
        );
        assert!(head.contains("To: \"Person 0\" <p0@x.test>, \"Person 1\""));
        assert!(head.contains("<p39@x.test>\r\n"));
    }

    #[test]
    fn base64_known_answers() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn quoted_printable_wraps_and_escapes() {
        let long = "a".repeat(100);
        let qp = quoted_printable(&long);
        assert!(qp.lines().all(|l| l.len() <= 76), "{qp}");
        assert_eq!(qp.replace("=\r\n", "").trim_end(), long);
        assert_eq!(quoted_printable("trailing "), "trailing=20\r\n");
    }

    #[test]
    fn fill_templates() {
        let v = TemplateValues::default().set("ticket.id", "7").set("name", "Bob");
        assert_eq!(
            fill("#{{ticket.id}} for {{ name }} {{unknown}} {{", &v),
            "#7 for Bob {{unknown}} {{"
        );
    }
}
