//! The adapter from raw bytes (via mail-parser) to the core's [`InboundMessage`].
//!
//! This is the only module that names `mail_parser`; nothing of it leaks out.
//! Where mail-parser drops a malformed Message-ID, In-Reply-To or References,
//! the raw header is read instead.

use crate::adapters::config::Limits;
use crate::core::model::{DeliveryReport, InboundMessage, Mailbox};
use jiff::Timestamp;
use mail_parser::{MessageParser, MimeHeaders, PartType};

/// Why a mail could not be taken apart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Bigger than `limits.max_message_bytes`.
    #[error("mail is {size} bytes, over the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// More header fields than `limits.max_headers`.
    #[error("mail has {count} header fields, over the limit of {max}")]
    TooManyHeaders {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More MIME parts than `limits.max_parts`.
    #[error("mail has {count} MIME parts, over the limit of {max}")]
    TooManyParts {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Not an RFC 5322 message at all.
    #[error("not a mail: {0}")]
    Malformed(String),
}

/// Takes a raw mail apart within the limits.
pub fn parse(raw: &[u8], limits: &Limits) -> Result<InboundMessage, ParseError> {
    if raw.len() > limits.max_message_bytes {
        return Err(ParseError::TooLarge {
            size: raw.len(),
            max: limits.max_message_bytes,
        });
    }
    let header_count = count_header_fields(raw);
    if header_count > limits.max_headers {
        return Err(ParseError::TooManyHeaders {
            count: header_count,
            max: limits.max_headers,
        });
    }
    let mut message = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| ParseError::Malformed("no header section".into()))?;
    if message.parts.len() > limits.max_parts {
        return Err(ParseError::TooManyParts {
            count: message.parts.len(),
            max: limits.max_parts,
        });
    }
    let headers: Vec<(String, String)> = message
        .headers_raw()
        .map(|(n, v)| (n.to_ascii_lowercase(), unfold(v)))
        .collect();
    if headers.is_empty() {
        return Err(ParseError::Malformed("no header fields".into()));
    }
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address().map(|e| Mailbox::new(a.name().map(String::from), e)))
        .filter(|m| m.email.contains('@') && m.email.len() <= MAX_ADDRESS_LEN);
    if from.is_none() && !headers.iter().any(|(n, _)| n == "from") {
        return Err(ParseError::Malformed("no From header".into()));
    }
    let raw_header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());

    let message_id = raw_header("message-id")
        .and_then(|v| extract_ids(v).into_iter().next())
        .filter(|id| id.len() <= MAX_ID_LEN);
    let in_reply_to = bounded_ids(raw_header("in-reply-to"), 4);
    let references = bounded_ids(raw_header("references"), limits.max_references);

    let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<Mailbox> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address().map(|e| Mailbox::new(x.name().map(String::from), e)))
                .filter(|m| m.email.contains('@') && m.email.len() <= MAX_ADDRESS_LEN)
                .collect()
        })
        .unwrap_or_default()
    };
    let to = addresses(message.to());
    let cc = addresses(message.cc());
    let mut subject = message.subject().unwrap_or("").replace(['\r', '\n'], " ");
    if subject.len() > MAX_SUBJECT_LEN {
        let mut end = MAX_SUBJECT_LEN;
        while !subject.is_char_boundary(end) {
            end -= 1;
        }
        subject.truncate(end);
        subject.push('…');
    }
    let date = message
        .date()
        .and_then(|d| Timestamp::from_second(d.to_timestamp()).ok());
    // An HTML-only mail becomes text through the HTML parser, keeping its
    // paragraphs and line breaks; the reply without its quoted part is taken
    // from the document too (agents' HTML replies).
    let html_only = message
        .text_body
        .first()
        .and_then(|&i| message.parts.get(i as usize))
        .is_some_and(|p| matches!(p.body, PartType::Html(_)));
    // (Only then: a text body asked for as HTML is converted to it first.)
    let (text, unquoted_html_text) = match html_only.then(|| message.body_html(0)).flatten() {
        Some(html) => {
            let (all, unquoted) = crate::adapters::html::texts(&html);
            (all, Some(unquoted))
        }
        None => (message.body_text(0).map(|t| t.into_owned()).unwrap_or_default(), None),
    };
    let attachments = message
        .attachments()
        .map(|p| {
            p.attachment_name().map(String::from).unwrap_or_else(|| {
                p.content_type()
                    .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
                    .unwrap_or_else(|| "attachment".into())
            })
        })
        .collect();
    // Their bytes are taken from the parsed message at the end, not copied.
    let mut attachment_parts: Vec<crate::core::outgoing::Attachment> = message
        .attachments()
        .map(|p| crate::core::outgoing::Attachment {
            name: p.attachment_name().unwrap_or("attachment").to_string(),
            content_type: p
                .content_type()
                .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")))
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase(),
            data: Vec::new(),
        })
        .collect();
    let (content_type, report_type) = match message.root_part().content_type() {
        Some(c) => (
            format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")).to_ascii_lowercase(),
            c.attribute("report-type").map(|r| r.to_ascii_lowercase()),
        ),
        None => ("text/plain".into(), None),
    };
    let delivery_report = if content_type == "multipart/report" {
        Some(delivery_report(&message))
    } else {
        None
    };
    let content_hash = {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            raw_header("from").unwrap_or(""),
            raw_header("date").unwrap_or(""),
            subject.as_str(),
            text.as_str(),
        ] {
            ctx.update(part.as_bytes());
            ctx.update(b"\0");
        }
        hex(ctx.finish().as_ref())
    };
    for (a, data) in attachment_parts.iter_mut().zip(attachment_bytes(&mut message)) {
        a.data = data;
    }
    Ok(InboundMessage {
        // Read by the pipeline for mail a person wrote.
        language: None,
        sentiment: Default::default(),
        intent: None,
        customer: Default::default(),
        articles: Vec::new(),
        message_id,
        in_reply_to,
        references,
        from,
        to,
        cc,
        subject,
        date,
        headers,
        text,
        unquoted_html_text,
        attachments,
        attachment_parts,
        content_type,
        report_type,
        delivery_report,
        content_hash,
        size: raw.len(),
    })
}

/// The attachments' bytes, in [`mail_parser::Message::attachments`] order,
/// moved out of the message where it decoded them (a decoded attachment is
/// most of a mail's size, and a copy of it is memory traffic for nothing).
fn attachment_bytes(message: &mut mail_parser::Message<'_>) -> Vec<Vec<u8>> {
    let ids = message.attachments.clone();
    ids.into_iter()
        .map_while(|id| {
            let part = message.parts.get_mut(id as usize)?;
            Some(match &mut part.body {
                PartType::Binary(b) | PartType::InlineBinary(b) => std::mem::take(b).into_owned(),
                PartType::Text(t) | PartType::Html(t) => std::mem::take(t).into_owned().into_bytes(),
                PartType::Message(m) => m.raw_message().to_vec(),
                PartType::Multipart(_) => Vec::new(),
            })
        })
        .collect()
}

fn delivery_report(message: &mail_parser::Message<'_>) -> DeliveryReport {
    let mut report = DeliveryReport::default();
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let ctype = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase();
        match (ctype.as_str(), &part.body) {
            ("message/delivery-status", body) => {
                let text = match body {
                    PartType::Text(t) => t.to_string(),
                    PartType::Binary(b) | PartType::InlineBinary(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::from_utf8_lossy(part.contents()).into_owned(),
                };
                report.recipients = parse_delivery_status(&text);
            }
            ("message/rfc822", PartType::Message(inner)) | ("message/global", PartType::Message(inner))
                if report.original_message_id.is_none() =>
            {
                report.original_message_id = inner
                    .header_raw("Message-ID")
                    .and_then(|v| extract_ids(v).into_iter().next());
            }
            ("text/rfc822-headers", _) | ("message/rfc822-headers", _) if report.original_message_id.is_none() => {
                let text = String::from_utf8_lossy(part.contents()).into_owned();
                report.original_message_id =
                    header_in_block(&text, "message-id").and_then(|v| extract_ids(&v).into_iter().next());
            }
            _ => {}
        }
    }
    report
}

/// Per-recipient `(address, action, status)` from a message/delivery-status body.
fn parse_delivery_status(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n").map(|b| b.replace("\r\n", "\n")) {
        let recipient = header_in_block(&block, "final-recipient")
            .or_else(|| header_in_block(&block, "original-recipient"))
            .map(|v| v.rsplit(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if let Some(r) = recipient.filter(|r| !r.is_empty()) {
            let action = header_in_block(&block, "action")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let status = header_in_block(&block, "status").unwrap_or_default();
            out.push((r, action, status.split_whitespace().next().unwrap_or("").to_string()));
        }
    }
    out
}

fn header_in_block(block: &str, name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in block.lines() {
        if let Some(v) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// Longest Message-ID we read (RFC 5322 lines are at most 998 characters; real ids are under 100).
const MAX_ID_LEN: usize = 250;
/// Longest address we read (RFC 5321 paths are at most 256 octets).
const MAX_ADDRESS_LEN: usize = 254;
/// Longest subject we keep, in bytes; longer ones are cut with an ellipsis.
const MAX_SUBJECT_LEN: usize = 1000;

/// The ids of an In-Reply-To or References value, each at most [`MAX_ID_LEN`],
/// without duplicates, and at most `max`: the first (the thread's root) and
/// the newest `max - 1`. Linear in the header's length.
fn bounded_ids(value: Option<&str>, max: usize) -> Vec<String> {
    let Some(value) = value else { return Vec::new() };
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = extract_ids(value)
        .into_iter()
        .filter(|id| id.len() <= MAX_ID_LEN && seen.insert(id.clone()))
        .collect();
    if ids.len() <= max {
        return ids;
    }
    let mut out = Vec::with_capacity(max);
    out.push(ids[0].clone());
    out.extend(ids[ids.len() - (max - 1)..].iter().cloned());
    out
}

/// Message ids from a header value: each `<...>`, or bare tokens when there are no brackets.
pub fn extract_ids(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        match after.find('>') {
            Some(end) => {
                let id = after[..end].trim();
                if !id.is_empty() && !id.contains(char::is_whitespace) {
                    out.push(id.to_string());
                }
                rest = &after[end + 1..];
            }
            None => {
                // Unterminated: the run up to white space, when it looks like an id.
                let id = after.split_whitespace().next().unwrap_or("");
                if id.contains('@') || id.len() >= 8 {
                    out.push(id.to_string());
                }
                rest = "";
            }
        }
    }
    if out.is_empty() {
        out = value
            .split([' ', '\t', ','])
            .map(|t| t.trim_matches(|c| c == '<' || c == '>' || c == '"'))
            .filter(|t| t.contains('@') && t.len() > 2)
            .map(String::from)
            .collect();
    }
    out
}

fn unfold(v: &str) -> String {
    if !v.contains(['\r', '\n']) {
        return v.trim().to_string();
    }
    let mut out = String::with_capacity(v.len());
    for part in v.split('\n') {
        out.push_str(part.strip_suffix('\r').unwrap_or(part));
    }
    out.trim().to_string()
}

fn count_header_fields(raw: &[u8]) -> usize {
    let mut count = 0;
    let mut line_start = true;
    for (i, &b) in raw.iter().enumerate() {
        if line_start {
            if b == b'\n' || (b == b'\r' && raw.get(i + 1) == Some(&b'\n')) {
                break;
            }
            if b != b' ' && b != b'\t' {
                count += 1;
            }
        }
        line_start = b == b'\n';
    }
    count
}

/// The length of a raw mail's header section, with the blank line after it
/// (the whole input when there is no blank line).
pub fn header_section_len(raw: &[u8]) -> usize {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => raw.len().min(256 * 1024),
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Date header of a raw mail: finds the field in the header section and
/// parses only that line.
pub fn date_of(raw: &[u8]) -> Option<Timestamp> {
    parse_date(&first_field(raw, b"date:")?[5..])
}

/// When a mail arrived, for a backfill: its Date header, else the date of its
/// topmost Received field (the last hop's, after its last `;`), which every
/// mail delivered into a mailbox carries; `None` when neither parses.
pub fn arrival_of(raw: &[u8]) -> Option<Timestamp> {
    date_of(raw).or_else(|| {
        let field = first_field(raw, b"received:")?;
        let at = field.iter().rposition(|&b| b == b';')?;
        parse_date(&field[at + 1..])
    })
}

/// The first header field named `name` (lowercase, with its colon), folded
/// lines included; the header section ends at the first empty line.
fn first_field(raw: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut at_line_start = true;
    let mut i = 0;
    while i < raw.len() {
        if at_line_start {
            let rest = &raw[i..];
            if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
                return None;
            }
            if rest.len() > name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                let mut end = i;
                // The field runs to the first line end not followed by folding white space.
                while end < raw.len() {
                    if raw[end] == b'\n' && !matches!(raw.get(end + 1), Some(b' ') | Some(b'\t')) {
                        break;
                    }
                    end += 1;
                }
                return Some(raw[i..end].to_vec());
            }
        }
        at_line_start = raw[i] == b'\n';
        i += 1;
    }
    None
}

/// An RFC 5322 date-time (a Date field's value), parsed as mail-parser reads a Date field.
fn parse_date(value: &[u8]) -> Option<Timestamp> {
    let mut line = b"Date:".to_vec();
    line.extend_from_slice(value);
    line.extend_from_slice(b"\r\n\r\n");
    MessageParser::new()
        .parse_headers(&line)
        .and_then(|m| m.date().map(|d| d.to_timestamp()))
        .and_then(|s| Timestamp::from_second(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_message_bytes: 1 << 20,
            max_parts: 50,
            max_headers: 100,
            ..Limits::default()
        }
    }

    #[test]
    fn each_attachment_keeps_its_bytes_in_order_whatever_its_kind() {
        let raw = b"From: a@x.test\r\nTo: s@x.test\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nSee the files.\r\n\
--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQgc3RlcHM=\r\n\
--b\r\nContent-Type: text/plain; name=log.txt\r\nContent-Disposition: attachment; filename=log.txt\r\n\r\n\
line one\r\n\
--b\r\nContent-Type: image/png; name=raw.png\r\nContent-Disposition: attachment; filename=raw.png\r\n\r\n\
PNGDATA\r\n\
--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=fwd.eml\r\n\r\n\
From: c@x.test\r\nSubject: inner\r\n\r\ninner body\r\n\
--b--\r\n";
        let m = parse(raw, &limits()).unwrap();
        let got: Vec<(&str, &[u8])> = m
            .attachment_parts
            .iter()
            .map(|a| (a.name.as_str(), a.data.as_slice()))
            .collect();
        // What mail-parser gives each part, read from its own parse.
        let whole = MessageParser::default().parse(&raw[..]).unwrap();
        let expected: Vec<(&str, &[u8])> = whole
            .attachments()
            .map(|p| (p.attachment_name().unwrap_or("attachment"), p.contents()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], ("a.pdf", &b"%PDF-1.4 steps"[..]));
        assert_eq!(got[1].1, b"line one");
        assert_eq!(got[2].1, b"PNGDATA");
        assert!(
            got[3].1.ends_with(b"inner body"),
            "{:?}",
            String::from_utf8_lossy(got[3].1)
        );
        assert_eq!(m.attachments, ["a.pdf", "log.txt", "raw.png", "fwd.eml"]);
        assert_eq!(m.text.trim_end(), "See the files.");
    }

    #[test]
    fn extract_ids_table() {
        let table: [(&str, &[&str]); 9] = [
            ("<also broken", &[]),
            ("Your message of Monday", &[]),
            ("Your message <x@y> of Monday", &["x@y"]),
            ("<a@b>", &["a@b"]),
            ("<a@b> <c@d>", &["a@b", "c@d"]),
            ("<a@b>\t<c@d>,<e@f>", &["a@b", "c@d", "e@f"]),
            ("<no-at-sign>", &["no-at-sign"]),
            ("bare@id.example", &["bare@id.example"]),
            ("<unterminated@x", &["unterminated@x"]),
        ];
        for (input, want) in table {
            assert_eq!(extract_ids(input), want, "{input:?}");
        }
    }

    #[test]
    fn malformed_ids_fall_back_to_raw() {
        let raw = b"From: a@example.com\r\nMessage-ID: <no-at-sign>\r\nIn-Reply-To: <broken\r\nReferences: <x@y> <z>\r\nSubject: hi\r\n\r\nbody\r\n";
        let m = parse(raw, &limits()).unwrap();
        assert_eq!(m.message_id.as_deref(), Some("no-at-sign"));
        assert!(m.in_reply_to.is_empty(), "a lone short word is no id");
        assert_eq!(m.references, vec!["x@y", "z"]);
    }

    #[test]
    fn references_are_bounded_and_deduplicated() {
        let many: String = (0..100_000).map(|i| format!("<r{i}@x.test> ")).collect();
        let long_id = format!("<{}@x.test>", "a".repeat(5000));
        let raw = format!(
            "From: a@example.com\r\nMessage-ID: {long_id}\r\nIn-Reply-To: <r99999@x.test> <r99999@x.test> {long_id}\r\nReferences: {many}\r\nSubject: {}\r\n\r\nbody\r\n",
            "s".repeat(100_000)
        );
        let big = Limits {
            max_message_bytes: 10 << 20,
            ..limits()
        };
        let m = parse(raw.as_bytes(), &big).unwrap();
        assert_eq!(m.message_id, None, "a 5 KB id is no id");
        assert_eq!(m.in_reply_to, vec!["r99999@x.test"]);
        assert_eq!(m.references.len(), 50);
        assert_eq!(m.references[0], "r0@x.test");
        assert_eq!(m.references[1], "r99951@x.test");
        assert_eq!(m.references[49], "r99999@x.test");
        assert_eq!(m.referenced_ids().len(), 50);
        assert!(m.subject.len() <= 1003 && m.subject.ends_with('…'));
    }

    #[test]
    fn limits_refuse_before_parsing() {
        let raw = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let small = Limits {
            max_message_bytes: 10,
            ..limits()
        };
        assert!(matches!(parse(raw, &small), Err(ParseError::TooLarge { .. })));
        let few = Limits {
            max_headers: 1,
            ..limits()
        };
        assert!(matches!(
            parse(raw, &few),
            Err(ParseError::TooManyHeaders { count: 2, max: 1 })
        ));
    }

    #[test]
    fn date_of_reads_only_the_date_field() {
        let raw = b"Received: from x\r\n\tby y; Mon, 1 Jan 2024 00:00:00 +0000\r\nDATE: Tue, 2 Jan 2024\r\n 10:00:00 +0100\r\nSubject: s\r\n\r\nDate: not this\r\n";
        assert_eq!(date_of(raw), Some("2024-01-02T09:00:00Z".parse().unwrap()));
        assert_eq!(
            date_of(b"Subject: s\r\n\r\nDate: Tue, 2 Jan 2024 10:00:00 +0000\r\n"),
            None
        );
    }

    #[test]
    fn arrival_is_the_date_else_the_topmost_received() {
        let dated = b"Received: by y; Mon, 1 Jan 2024 00:00:00 +0000\r\nDate: Tue, 2 Jan 2024 10:00:00 +0000\r\n\r\n";
        assert_eq!(arrival_of(dated), Some("2024-01-02T10:00:00Z".parse().unwrap()));
        // No Date: the last hop's time (folded, a `;` in its comment), not an earlier hop's.
        let undated = b"Received: from x (helo; see) by y;\r\n\tWed, 3 Jan 2024 08:00:00 -0500\r\nReceived: by z; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: s\r\n\r\n";
        assert_eq!(arrival_of(undated), Some("2024-01-03T13:00:00Z".parse().unwrap()));
        // Nothing to go by, or only in the body: no arrival.
        assert_eq!(
            arrival_of(b"Subject: s\r\n\r\nReceived: by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"),
            None
        );
        assert_eq!(arrival_of(b"Received: by y; not a date\r\n\r\n"), None);
    }

    #[test]
    fn no_from_is_malformed() {
        let raw = b"garbage without headers\r\n\r\n";
        assert!(matches!(parse(raw, &limits()), Err(ParseError::Malformed(_))));
    }
}
