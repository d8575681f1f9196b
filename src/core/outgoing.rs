//! Mail we send: the [`OutgoingMail`] value the core produces and the
//! template filler. `wire` turns it into RFC 5322 bytes.

use crate::core::model::{Mailbox, TicketId};
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
    /// All recipient addresses.
    pub fn recipients(&self) -> Vec<String> {
        self.to.iter().map(|m| m.email.clone()).collect()
    }
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

/// `"Name" <addr>` for people to read (in notifications and `show`; the wire
/// format is written by `wire`).
pub fn format_mailbox(m: &Mailbox) -> String {
    let email = sanitize(&m.email);
    match &m.name {
        Some(name) if !name.trim().is_empty() => {
            let escaped = sanitize(name).replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\" <{email}>")
        }
        _ => format!("<{email}>"),
    }
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
    fn fill_templates() {
        let v = TemplateValues::default().set("ticket.id", "7").set("name", "Bob");
        assert_eq!(
            fill("#{{ticket.id}} for {{ name }} {{unknown}} {{", &v),
            "#7 for Bob {{unknown}} {{"
        );
    }
}
