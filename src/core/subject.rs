//! Subjects: the ticket tag (`[Support #1042]`) and normalisation for display
//! and comparison, tolerant of reply/forward prefixes in many languages.

/// Reply and forward prefixes, lowercase, without the colon.
const PREFIXES: &[&str] = &[
    "re", "aw", "sv", "vs", "wg", "rif", "r", "fw", "fwd", "tr", "antw", "antwort", "odp", "ynt", "res", "enc",
    "doorst", "atb", "vb", "rv", "réf", "ref", "回复", "答复", "转发", "回覆", "轉寄",
];

/// Strips reply/forward prefixes (`Re:`, `AW:`, `Fwd[2]:`, `回复：`), mailing-list
/// style `[tags]` and extra white space, keeping the words the customer wrote.
pub fn normalize(subject: &str) -> String {
    let mut s = collapse(subject);
    loop {
        let before = s.len();
        s = strip_bracket_tag(&s).to_string();
        s = strip_prefix(&s).to_string();
        if s.len() == before {
            break;
        }
    }
    s
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn strip_bracket_tag(s: &str) -> &str {
    let t = s.trim_start();
    if let Some(rest) = t.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return rest[end + 1..].trim_start();
    }
    t
}

fn strip_prefix(s: &str) -> &str {
    let t = s.trim_start();
    // The prefix word ends at ':' or '：', optionally with "[2]" or "(2)" before it.
    let colon = t.char_indices().find(|(_, c)| *c == ':' || *c == '：');
    let Some((i, c)) = colon else { return t };
    let word = t[..i].trim_end();
    let word = match word.find(['[', '(']) {
        Some(b) if word.ends_with([']', ')']) && word[b + 1..word.len() - 1].chars().all(|c| c.is_ascii_digit()) => {
            &word[..b]
        }
        _ => word,
    };
    let lower = word.to_lowercase();
    if PREFIXES.contains(&lower.as_str()) {
        t[i + c.len_utf8()..].trim_start()
    } else {
        t
    }
}

/// The ticket number in a subject tag like `[Support #1042]`, tolerant of case,
/// spacing and mangling (`[support#1042]`, `[ Support # 1042 ]`, `(Support #1042)`).
pub fn find_tag(subject: &str, tag: &str) -> Option<u64> {
    let lower = subject.to_lowercase();
    let tag = tag.to_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(&tag) {
        let start = from + pos;
        from = start + tag.len();
        let before = lower[..start].trim_end();
        if !(before.ends_with('[') || before.ends_with('(')) {
            continue;
        }
        let after = lower[from..].trim_start();
        let Some(after) = after.strip_prefix('#') else {
            continue;
        };
        let after = after.trim_start();
        let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            continue;
        }
        let close = after[digits.len()..].trim_start();
        if close.starts_with(']') || close.starts_with(')') {
            return digits.parse().ok();
        }
    }
    None
}

/// The subject of our outgoing mail: the tag first, then the normalised subject.
pub fn tagged(subject: &str, tag: &str, ticket: u64) -> String {
    let clean = normalize(subject);
    if clean.is_empty() {
        format!("[{tag} #{ticket}]")
    } else {
        format!("[{tag} #{ticket}] {clean}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        let table = [
            ("Printer broken", "Printer broken"),
            ("Re: Printer broken", "Printer broken"),
            ("RE: re: Printer broken", "Printer broken"),
            ("AW: WG: Drucker kaputt", "Drucker kaputt"),
            ("SV: VS: Skrivare", "Skrivare"),
            ("RIF: R: Stampante", "Stampante"),
            ("Fwd: Fw: thing", "thing"),
            ("Re[2]: thing", "thing"),
            ("Re(3): thing", "thing"),
            ("回复：打印机坏了", "打印机坏了"),
            ("回复: 答复: 打印机", "打印机"),
            ("Re: [Support #1042] Printer broken", "Printer broken"),
            ("[Support #1042] Re: [list] Printer", "Printer"),
            ("  lots   of\tspace  ", "lots of space"),
            ("Reply: not a prefix", "Reply: not a prefix"),
            ("Meeting: agenda", "Meeting: agenda"),
            ("", ""),
        ];
        for (input, want) in table {
            assert_eq!(normalize(input), want, "{input:?}");
        }
    }

    #[test]
    fn find_tag_table() {
        let table = [
            ("[Support #1042] Printer", Some(1042)),
            ("Re: [Support #1042] Printer", Some(1042)),
            ("AW: [support#7] x", Some(7)),
            ("[ Support # 12 ] x", Some(12)),
            ("(Support #5) x", Some(5)),
            ("Support #5 without brackets", None),
            ("[Support #] x", None),
            ("[Support #12abc] x", None),
            ("[Other #12] x", None),
            ("[Sales] [Support #3]", Some(3)),
        ];
        for (input, want) in table {
            assert_eq!(find_tag(input, "Support"), want, "{input:?}");
        }
    }

    #[test]
    fn tagged_subjects() {
        assert_eq!(tagged("Re: Printer", "Support", 3), "[Support #3] Printer");
        assert_eq!(tagged("", "Support", 3), "[Support #3]");
        assert_eq!(tagged("[Support #3] Re: x", "Support", 3), "[Support #3] x");
    }
}
