//! Agent replies: removing the quoted notification the way real mail clients
//! quote it, and reading the `#command` lines at the top. Pure functions.

use crate::core::model::{Priority, Status};

/// The line at the top of our notifications; everything from it down is ours.
pub const REPLY_MARKER: &str = "##- Please type your reply above this line -##";

/// The first line of the footer of our mail to agents (after a `--` line).
pub const FOOTER_HOWTO: &str = "Reply to this mail to answer the customer; your address stays hidden.";

/// The last line of that footer: the commands an agent can use.
pub const FOOTER_COMMANDS: &str = "Commands on the first lines of a reply: #note #status open|pending|resolved|closed #priority low|normal|high|urgent #assign NAME #take #queue NAME #tag a b #untag a #type NAME #cc add|remove ADDRESS #template NAME";

/// The footer of our mail to agents, `--` line first: [`extract`] knows it as ours.
pub fn agent_footer() -> String {
    format!("--\n{FOOTER_HOWTO}\n{FOOTER_COMMANDS}")
}

/// The starts of the footer's lines (quoting clients may wrap or cut them).
const HOWTO_PREFIX: &str = "Reply to this mail to answer the customer";
const COMMANDS_PREFIX: &str = "Commands on the first lines of a reply";

/// One command from the top of an agent's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `#note`: the whole reply is internal.
    Note,
    /// `#status open|pending|resolved|closed`.
    Status(Status),
    /// `#priority low|normal|high|urgent`.
    Priority(Priority),
    /// `#assign NAME|EMAIL`.
    Assign(String),
    /// `#take`: assign to the sender.
    Take,
    /// `#queue NAME`.
    Queue(String),
    /// `#tag a b`.
    Tag(Vec<String>),
    /// `#untag a b`.
    Untag(Vec<String>),
    /// `#type NAME`.
    Type(String),
    /// `#cc add ADDRESS`.
    CcAdd(String),
    /// `#cc remove ADDRESS`.
    CcRemove(String),
    /// `#merge N`: this ticket is merged into ticket N (N is kept, on its clocks).
    Merge(u64),
    /// `#split N`: ticket N, merged into this one, gets its own ticket back.
    Split(u64),
}

/// An agent's reply taken apart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedReply {
    /// Commands, in order.
    pub commands: Vec<Command>,
    /// Lines that were not understood, with why.
    pub errors: Vec<String>,
    /// The text to relay: commands and quotes removed, templates inserted.
    pub body: String,
}

/// How an agent's text stood to the quoted mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// No quote at all.
    Plain,
    /// Above the quote.
    Top,
    /// Below the quote.
    Bottom,
    /// Between quoted lines: the answers are kept with the quoted questions as `>` context.
    Inline,
}

/// What a reply says once the quoted mail is taken out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    /// The writer's own text (for inline answers with `>` context lines).
    pub text: String,
    /// Where it stood.
    pub style: Style,
    /// Whether the mail had any text at all (so an empty `text` is a loss to report).
    pub had_text: bool,
}

/// The writer's text of a reply, without the quoted mail: see [`extract`].
pub fn strip_quotes(text: &str) -> String {
    extract(text).text
}

/// Takes the quoted mail out of a reply, wherever the writer typed: above the
/// quote, below it, or between quoted lines. Quotes are found by shape, in
/// any language: `>` lines; attribution lines (one to three lines ending in
/// `:` with a date, time or address, right before a quote or our text); header
/// blocks (three or more `Label: value` lines with an address and a date,
/// optionally after a line of dashes or underscores); "Original Message"
/// separators in any wording; and our own marker, which locates our quoted
/// notification exactly. Our lines (marker, facts, footer, command list, the
/// `[ref:…]` token) never survive, not even as inline context.
pub fn extract(text: &str) -> Extracted {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    let had_text = lines.iter().any(|l| !l.trim().is_empty());
    let cut = hard_cut(&lines);
    let mut kinds: Vec<Kind> = lines[..cut].iter().map(|l| classify_line(l)).collect();
    // Attribution lines: the last one ends in ':' and a quote (or our text) follows.
    // A client that wrapped "…<addr\n>:" made the colon line look quoted.
    for i in 0..cut.saturating_sub(1) {
        if kinds[i] == Kind::Text
            && lines[i + 1].trim() == ">:"
            && (has_address(lines[i]) || has_date_or_time(lines[i]))
        {
            kinds[i] = Kind::Attribution;
            kinds[i + 1] = Kind::Attribution;
        }
    }
    for i in 0..cut {
        if kinds[i] != Kind::Text || !ends_with_colon(lines[i]) || !quote_follows(&lines, &kinds, i + 1, cut) {
            continue;
        }
        if let Some(start) = attribution_start(&lines, &kinds, i) {
            for k in kinds.iter_mut().take(i + 1).skip(start) {
                *k = Kind::Attribution;
            }
        }
    }
    // A long quoted line that the client wrapped without `>`: its tail belongs to the quote.
    for i in 1..cut.saturating_sub(1) {
        let prev = lines[i - 1].trim_start();
        if kinds[i] == Kind::Text
            && prev.starts_with('>')
            && unquote(prev).chars().count() >= 60
            && lines[i + 1].trim_start().starts_with('>')
            && lines[i].trim().chars().next().is_some_and(|c| !c.is_uppercase())
        {
            kinds[i] = Kind::Quote;
        }
    }
    let ours = our_lines(&lines[..cut], &kinds);
    // Runs of the writer's text and of quoted lines, in order.
    let mut blocks: Vec<(Kind, Vec<usize>)> = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let k = match k {
            Kind::Blank => {
                if let Some((_, idx)) = blocks.last_mut() {
                    idx.push(i);
                }
                continue;
            }
            Kind::Attribution => Kind::Quote,
            k => *k,
        };
        match blocks.last_mut() {
            Some((last, idx)) if *last == k => idx.push(i),
            _ => blocks.push((k, vec![i])),
        }
    }
    // A signature below the quote (some clients put it there) is the writer's,
    // but it does not make the reply an inline one.
    let signature_block = |b: usize| {
        blocks[b].0 == Kind::Text
            && blocks[b]
                .1
                .first()
                .is_some_and(|&i| matches!(lines[i].trim_end(), "--" | "-- "))
    };
    let texts: Vec<usize> = (0..blocks.len())
        .filter(|&b| blocks[b].0 == Kind::Text && !(signature_block(b) && b + 1 == blocks.len() && b > 0))
        .collect();
    let quotes: Vec<usize> = (0..blocks.len()).filter(|&b| blocks[b].0 == Kind::Quote).collect();
    let (first_q, last_q) = (quotes.first().copied(), quotes.last().copied());
    let style = match (first_q, last_q) {
        _ if texts.is_empty() => {
            if quotes.is_empty() {
                Style::Plain
            } else {
                Style::Top
            }
        }
        (None, _) => Style::Plain,
        (Some(f), _) if texts.iter().all(|&t| t < f) => Style::Top,
        (_, Some(l)) if quotes.len() == 1 && texts.iter().all(|&t| t > l) => Style::Bottom,
        _ => Style::Inline,
    };
    let last_text = texts.last().copied();
    let mut out: Vec<String> = Vec::new();
    for (b, (kind, idx)) in blocks.iter().enumerate() {
        match kind {
            Kind::Text => out.extend(idx.iter().map(|&i| match kinds[i] {
                Kind::Blank => String::new(),
                _ => lines[i].to_string(),
            })),
            Kind::Quote if style == Style::Inline && last_text.is_some_and(|t| b < t) => {
                // The customer's words as context, never ours; one blank line after.
                let context: Vec<String> = idx
                    .iter()
                    .filter(|&&i| kinds[i] == Kind::Quote && !ours[i])
                    .map(|&i| format!("> {}", unquote(lines[i])).trim_end().to_string())
                    .collect();
                let trimmed: Vec<String> = trim_blank_quotes(context);
                if !trimmed.is_empty() {
                    if out.last().is_some_and(|l| !l.is_empty()) {
                        out.push(String::new());
                    }
                    out.extend(trimmed);
                    out.push(String::new());
                }
            }
            _ => {}
        }
    }
    let mut text = out.join("\n");
    // Blank edges and runs of blank lines.
    while text.contains("\n\n\n") {
        text = text.replace("\n\n\n", "\n\n");
    }
    Extracted {
        text: text.trim().to_string(),
        style,
        had_text,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Blank,
    Text,
    Quote,
    Attribution,
}

fn classify_line(line: &str) -> Kind {
    let t = line.trim();
    if t.is_empty() {
        Kind::Blank
    } else if t.starts_with('>') {
        if unquote(t).is_empty() {
            Kind::Blank
        } else {
            Kind::Quote
        }
    } else {
        Kind::Text
    }
}

/// A quoted line's content: every level of `>` off.
fn unquote(line: &str) -> &str {
    let mut t = line.trim_start();
    while let Some(rest) = t.strip_prefix('>') {
        t = rest.trim_start();
    }
    t.trim_end()
}

fn trim_blank_quotes(mut v: Vec<String>) -> Vec<String> {
    while v.first().is_some_and(|l| l == ">") {
        v.remove(0);
    }
    while v.last().is_some_and(|l| l == ">") {
        v.pop();
    }
    v
}

/// Whether a line ends as an attribution does: with `:`, or with a "wrote"
/// word and no colon when it also holds a date and an address.
fn ends_with_colon(line: &str) -> bool {
    let t = line.trim_end();
    t.ends_with(':')
        || t.ends_with('：')
        || (has_date_or_time(t) && has_address(t) && ends_with_known_phrase(&format!("{t}:")))
}

/// Whether, after blank lines from `from`, a quoted line, our marker, a header block or the end follows.
fn quote_follows(lines: &[&str], kinds: &[Kind], from: usize, cut: usize) -> bool {
    let mut i = from;
    while i < cut && kinds[i] == Kind::Blank {
        i += 1;
    }
    i >= cut || kinds[i] == Kind::Quote || lines[i].contains(REPLY_MARKER)
}

/// The first line of an attribution ending at `end`: up to three lines, the
/// upper ones joined only while they read as the start of one wrapped line
/// (no closing punctuation above, the next beginning with `<`, in lower case
/// or short), whose text holds a date, a time or an address (or a known
/// "wrote:" phrase).
fn attribution_start(lines: &[&str], kinds: &[Kind], end: usize) -> Option<usize> {
    if lines[end].trim().starts_with('#') {
        return None;
    }
    let mut start = end;
    while start > 0 && end - start < 2 {
        let above = lines[start - 1].trim();
        let here = lines[start].trim();
        let continues = here.starts_with('<')
            || here.chars().next().is_some_and(char::is_lowercase)
            || here.chars().count() < 30
            || above.ends_with('<')
            || above.ends_with(',');
        if kinds[start - 1] != Kind::Text
            || above.starts_with('#')
            || above.ends_with(['.', '!', '?', ';', ':'])
            || (above.ends_with(',') && !has_date_or_time(above) && !has_address(above))
            || !continues
        {
            break;
        }
        start -= 1;
    }
    // The longest block that reads as an attribution, else a shorter one.
    (start..=end).find(|&s| {
        let joined = joined(&lines[s..=end]);
        joined.len() <= 400 && (has_date_or_time(&joined) || has_address(&joined) || ends_with_known_phrase(&joined))
    })
}

fn joined(lines: &[&str]) -> String {
    lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
}

fn ends_with_known_phrase(t: &str) -> bool {
    const ENDS: &[&str] = &[
        "wrote:",
        "schrieb:",
        "écrit :",
        "écrit:",
        "escribió:",
        "schreef:",
        "scritto:",
        "skrev:",
        "napisał:",
        "kirjoitti:",
        "написал:",
        "написала:",
        "escreveu:",
        "写道：",
        "写道:",
    ];
    let t = t.trim_end();
    ENDS.iter().any(|e| t.ends_with(e))
}

fn has_address(t: &str) -> bool {
    t.contains('@') && t.split_whitespace().any(|w| w.contains('@') && w.len() > 3)
}

/// A year, a clock time, or a numeric date.
fn has_date_or_time(t: &str) -> bool {
    let b = t.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(|c| c.is_ascii_digit());
    for i in 0..b.len() {
        if !digit(i) || (i > 0 && digit(i - 1)) {
            continue;
        }
        let mut j = i;
        while digit(j) {
            j += 1;
        }
        let run = j - i;
        // 10:00, 9:41
        if (1..=2).contains(&run) && b.get(j) == Some(&b':') && digit(j + 1) && digit(j + 2) {
            return true;
        }
        // 2026, 1999
        if run == 4 && (b[i] == b'1' || b[i] == b'2') {
            return true;
        }
        // 23.11.26, 11/23/26
        if (1..=2).contains(&run) && matches!(b.get(j), Some(b'.' | b'/' | b'-')) && digit(j + 1) {
            let mut k = j + 1;
            while digit(k) {
                k += 1;
            }
            if matches!(b.get(k), Some(b'.' | b'/' | b'-')) && digit(k + 1) {
                return true;
            }
        }
    }
    false
}

/// Where the rest of the mail is the original, unquoted: our marker, an
/// "Original Message" separator, a header block (after an optional line of
/// dashes or underscores), or an attribution after which our notification
/// follows unquoted. Returns `lines.len()` when there is none.
fn hard_cut(lines: &[&str]) -> usize {
    let n = lines.len();
    let kinds: Vec<Kind> = lines.iter().map(|l| classify_line(l)).collect();
    // From the end: the next non-blank line after each, and whether our marker
    // comes (unquoted) before the next quoted line. Linear, whatever the mail.
    let mut next_nonblank = vec![None; n];
    let mut marker_below = vec![false; n];
    let (mut next, mut marker) = (None, false);
    for k in (0..n).rev() {
        next_nonblank[k] = next;
        marker_below[k] = marker;
        let t = lines[k].trim();
        if !t.is_empty() {
            next = Some(k);
        }
        if t.starts_with('>') {
            marker = false;
        } else if t.contains(REPLY_MARKER) {
            marker = true;
        }
    }
    for i in 0..n {
        let t = lines[i].trim();
        if t.starts_with('>') {
            continue;
        }
        if t.contains(REPLY_MARKER) || is_named_separator(t) || header_block(&lines[i..]) {
            return i;
        }
        if is_rule_line(t) && next_nonblank[i].is_some_and(|j| header_block(&lines[j..])) {
            return i;
        }
        let unquoted_follows = next_nonblank[i].is_some_and(|j| !lines[j].trim().starts_with('>'));
        if ends_with_colon(t)
            && unquoted_follows
            && let Some(start) = attribution_start(lines, &kinds, i)
        {
            let text = joined(&lines[start..=i]);
            // Above an unquoted original: our notification follows, or the
            // attribution has both a date and an address (webmail that does not quote).
            let strong = has_date_or_time(&text) && has_address(&text) && text.chars().count() >= 30;
            if text.len() <= 400 && (strong || marker_below[i]) {
                return start;
            }
        }
    }
    n
}

/// `-----Original Message-----`, `-----Ursprüngliche Nachricht-----`,
/// `---------- Forwarded message ---------`, `----- Message d'origine -----`…
fn is_named_separator(t: &str) -> bool {
    let lead = t.chars().take_while(|c| *c == '-').count();
    let trail = t.chars().rev().take_while(|c| *c == '-').count();
    if lead < 4 || trail < 4 || lead + trail >= t.chars().count() {
        return false;
    }
    let inner: String = t.chars().skip(lead).take(t.chars().count() - lead - trail).collect();
    let inner = inner.trim();
    // A label ("Original Message"), or an attribution framed in dashes (Zoho).
    ((3..=40).contains(&inner.chars().count())
        && inner
            .chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '\'' || c == '’'))
        || (has_date_or_time(inner) && has_address(inner))
}

fn is_rule_line(t: &str) -> bool {
    t.chars().count() >= 4 && t.chars().all(|c| c == '_' || c == '-' || c == '=')
}

/// Three or more `Label: value` lines in a row, in any order and language,
/// with an address and a date among the values (Outlook, Windows Mail, Hotmail…).
fn header_block(lines: &[&str]) -> bool {
    let mut count = 0;
    let mut address = false;
    let mut date = false;
    for line in lines.iter().take(8) {
        let t = line.trim().trim_start_matches('*');
        if t.is_empty() {
            break;
        }
        // A value wrapped onto the next line (a long From address).
        if count > 0 && t.starts_with('<') {
            address |= has_address(t);
            continue;
        }
        let Some((label, value)) = t.split_once(':') else { break };
        let label = label.trim().trim_end_matches('*');
        let words = label.split_whitespace().count();
        if label.is_empty()
            || label.chars().count() > 30
            || words > 4
            || !label.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-')
        {
            break;
        }
        count += 1;
        address |= has_address(value) || value.contains('<');
        date |= has_date_or_time(value);
    }
    count >= 3 && address && date
}

/// Which quoted lines are ours: the marker and the facts block after it, the
/// footer from `--` over the command list, and the `[ref:…]` token.
fn our_lines(lines: &[&str], kinds: &[Kind]) -> Vec<bool> {
    #[derive(PartialEq)]
    enum State {
        Outside,
        AfterMarker,
        Facts,
        Footer,
    }
    let mut ours = vec![false; lines.len()];
    let mut state = State::Outside;
    for i in 0..lines.len() {
        let q = unquote(lines[i]);
        let blank = kinds[i] == Kind::Blank;
        if q.contains(REPLY_MARKER) {
            ours[i] = true;
            state = State::AfterMarker;
            continue;
        }
        let next = lines.get(i + 1).map(|l| unquote(l)).unwrap_or("");
        if q == "--" && next.starts_with(HOWTO_PREFIX) {
            state = State::Footer;
        }
        match state {
            State::AfterMarker if blank => {}
            State::AfterMarker | State::Facts if !blank => {
                ours[i] = true;
                state = State::Facts;
            }
            State::Facts => state = State::Outside,
            State::Footer => {
                ours[i] = true;
                if q.starts_with(COMMANDS_PREFIX) {
                    state = State::Outside;
                }
            }
            _ => {}
        }
        if q.contains("[ref:") {
            ours[i] = true;
        }
    }
    ours
}

/// Reads commands at the top of `text` (after quotes were stripped) and
/// inserts `#template NAME` texts where their lines stand. `template` returns
/// the filled text of a template by name.
pub fn parse_reply(text: &str, template: &dyn Fn(&str) -> Option<String>) -> ParsedReply {
    let mut out = ParsedReply::default();
    let mut body_lines: Vec<String> = Vec::new();
    let mut at_top = true;
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("#template") {
            let name = name.trim();
            match template(name) {
                Some(text) => body_lines.push(text.trim_end().to_string()),
                None => out.errors.push(format!("#template {name}: no template of that name")),
            }
            at_top = false;
            continue;
        }
        if at_top && t.is_empty() {
            // Keep the blank line after an inline answer's quoted question.
            if body_lines.last().is_some_and(|l| !l.is_empty()) {
                body_lines.push(String::new());
            }
            continue;
        }
        // Inline answers open with the quoted question: commands may follow it.
        if at_top && t.starts_with('>') {
            body_lines.push(line.to_string());
            continue;
        }
        if at_top && t.starts_with('#') && t.len() > 1 && !t[1..].starts_with([' ', '#']) {
            match parse_command(t) {
                Ok(c) => out.commands.push(c),
                Err(e) => out.errors.push(e),
            }
            continue;
        }
        at_top = false;
        if !(t.is_empty() && body_lines.last().is_some_and(|l| l.trim().is_empty())) {
            body_lines.push(line.to_string());
        }
    }
    out.body = body_lines.join("\n").trim().to_string();
    // A reply of commands and the client's automatic signature says nothing to the customer.
    let before_signature = out
        .body
        .split('\n')
        .take_while(|l| l.trim_end() != "--")
        .filter(|l| !l.trim_start().starts_with('>'))
        .collect::<Vec<_>>()
        .join("\n");
    if before_signature.trim().is_empty() {
        out.body.clear();
    }
    out
}

fn parse_command(line: &str) -> Result<Command, String> {
    let mut words = line[1..].split_whitespace();
    let name = words.next().unwrap_or("").to_ascii_lowercase();
    let args: Vec<String> = words.map(String::from).collect();
    let one = |what: &str| -> Result<String, String> {
        match args.as_slice() {
            [a] => Ok(a.clone()),
            _ => Err(format!("#{name}: expected one {what}")),
        }
    };
    Ok(match name.as_str() {
        "note" => Command::Note,
        "take" => Command::Take,
        "status" => {
            let s = one("status (open, pending, resolved, closed)")?;
            match Status::parse(&s.to_ascii_lowercase()) {
                Some(Status::New) | None => {
                    return Err(format!("#status {s}: expected open, pending, resolved or closed"));
                }
                Some(st) => Command::Status(st),
            }
        }
        "priority" => {
            let p = one("priority (low, normal, high, urgent)")?;
            Command::Priority(match p.to_ascii_lowercase().as_str() {
                "low" => Priority::Low,
                "normal" => Priority::Normal,
                "high" => Priority::High,
                "urgent" => Priority::Urgent,
                _ => return Err(format!("#priority {p}: expected low, normal, high or urgent")),
            })
        }
        "assign" => {
            if args.is_empty() {
                return Err("#assign: expected an agent's name or address".into());
            }
            Command::Assign(args.join(" "))
        }
        "queue" => Command::Queue(one("queue name")?),
        "type" => Command::Type(args.join(" ")).clone(),
        "tag" | "untag" => {
            if args.is_empty() {
                return Err(format!("#{name}: expected one or more tags"));
            }
            let tags = args.iter().map(|t| t.trim_matches(',').to_ascii_lowercase()).collect();
            if name == "tag" {
                Command::Tag(tags)
            } else {
                Command::Untag(tags)
            }
        }
        "cc" => match args.as_slice() {
            [op, addr] if op == "add" && addr.contains('@') => Command::CcAdd(addr.to_ascii_lowercase()),
            [op, addr] if op == "remove" && addr.contains('@') => Command::CcRemove(addr.to_ascii_lowercase()),
            _ => return Err("#cc: expected `#cc add ADDRESS` or `#cc remove ADDRESS`".into()),
        },
        "merge" | "split" => {
            let n = one("ticket number")?;
            match n.trim_start_matches('#').parse::<u64>() {
                Ok(n) if n > 0 && name == "merge" => Command::Merge(n),
                Ok(n) if n > 0 => Command::Split(n),
                _ => return Err(format!("#{name} {n}: expected a ticket number, like #{name} 42")),
            }
        }
        other => {
            return Err(format!(
                "#{other}: unknown command (known: #note #status #priority #assign #take #queue #tag #untag #type #cc #merge #split #template)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(strip_quotes(input), expected, "input:\n{input}");
    }

    #[test]
    fn strips_each_clients_quote_style() {
        // Gmail, attribution on one line.
        check(
            "Thanks, fixed.\n\nOn Mon, Nov 23, 2026 at 10:00 AM Example Support <support@example.com> wrote:\n> ##- Please type your reply above this line -##\n> Ticket #1\n",
            "Thanks, fixed.",
        );
        // Gmail, long attribution wrapped over two lines.
        check(
            "Done.\n\nOn Mon, Nov 23, 2026 at 10:00 AM Bob Customer via Example Support <\nsupport+1.alice.abcdefghij@example.com> wrote:\n\n> hello\n",
            "Done.",
        );
        // Apple Mail.
        check(
            "Sure thing.\n\n> On 23 Nov 2026, at 10:00, Example Support <support@example.com> wrote:\n> \n> hi\n",
            "Sure thing.",
        );
        check(
            "Sure thing.\n\nOn 23 Nov 2026, at 10:00, Example Support <support@example.com> wrote:\n\n> hi\n",
            "Sure thing.",
        );
        // Thunderbird.
        check(
            "Reset it.\n\nOn 11/23/26 10:00 AM, Example Support wrote:\n> text\n",
            "Reset it.",
        );
        // Outlook desktop (separator line, From/Sent/To/Subject block, no > quoting).
        check(
            "Please restart.\n\nRegards,\nAlice\n\n________________________________\nFrom: Example Support <support@example.com>\nSent: Monday, November 23, 2026 10:00 AM\nTo: Alice Jones <alice@example.com>\nSubject: [Support #1] Printer\n\n##- Please type your reply above this line -##\n",
            "Please restart.\n\nRegards,\nAlice",
        );
        // Outlook, German.
        check(
            "Erledigt.\n\nVon: Example Support <support@example.com>\nGesendet: Montag, 23. November 2026 10:00\nAn: Alice\nBetreff: x\n",
            "Erledigt.",
        );
        check("Ok.\n\n-----Original Message-----\nFrom: x\n", "Ok.");
        // German clients.
        check(
            "Passt.\n\nAm 23.11.2026 um 10:00 schrieb Example Support <support@example.com>:\n> x\n",
            "Passt.",
        );
        // The marker alone, unquoted (some clients do not quote).
        check(
            "Yes.\n##- Please type your reply above this line -##\nTicket #1",
            "Yes.",
        );
        // Inline answers keep the questions they answer as context.
        check(
            "> question one\nanswer one\n> question two\nanswer two",
            "> question one\n\nanswer one\n\n> question two\n\nanswer two",
        );
        // Nothing to strip.
        check(
            "Just text.\nOn reflection, this stays.",
            "Just text.\nOn reflection, this stays.",
        );
    }

    /// Our notification as a client quotes it.
    const NOTE: &str = "> ##- Please type your reply above this line -##\n>\n> New ticket #1 · queue general · priority normal · status new\n> From: \"Carol Customer\" <carol@customer.test>\n> Assigned to: Alice Jones\n>\n> My printer is on fire.\n> Can you help?\n>\n> --\n> Reply to this mail to answer the customer; your address stays hidden.\n> Commands on the first lines of a reply: #note #status open|pending|resolved|closed\n>\n> [ref:1.abcdefghij]\n";

    /// The same, unquoted (Outlook and others put the original below a header block).
    fn note_unquoted() -> String {
        NOTE.lines()
            .map(|l| l.trim_start_matches('>').trim_start())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn shape(input: &str, expected: &str, style: Style) {
        let e = extract(input);
        assert_eq!((e.text.as_str(), e.style), (expected, style), "input:\n{input}");
    }

    #[test]
    fn top_bottom_and_inline_answers() {
        // Top-posting under a Gmail attribution.
        shape(
            &format!(
                "Thanks, fixed.\n\nOn Mon, Nov 23, 2026 at 10:00 AM Example Support <support@example.com> wrote:\n{NOTE}"
            ),
            "Thanks, fixed.",
            Style::Top,
        );
        // Bottom-posting (Thunderbird, mailing-list style), with a signature.
        shape(
            &format!("On 11/23/26 10:00 AM, Example Support wrote:\n{NOTE}\nPlease unplug it first.\n\nAlice"),
            "Please unplug it first.\n\nAlice",
            Style::Bottom,
        );
        // Bottom-posting without an attribution.
        shape(&format!("{NOTE}\nUnplug it."), "Unplug it.", Style::Bottom);
        // Inline: the customer's questions stay as context, nothing of ours does.
        let inline = "On Mon, Nov 23, 2026 at 10:00 AM Example Support <support@example.com> wrote:\n> ##- Please type your reply above this line -##\n>\n> New ticket #1 · queue general · priority normal · status new\n> From: \"Carol Customer\" <carol@customer.test>\n> Assigned to: Alice Jones\n>\n> My printer is on fire.\n\nUnplug it now.\n\n> Can you help?\n\nYes, a technician comes at 3.\n\n> --\n> Reply to this mail to answer the customer; your address stays hidden.\n> Commands on the first lines of a reply: #note\n>\n> [ref:1.abcdefghij]\n";
        shape(
            inline,
            "> My printer is on fire.\n\nUnplug it now.\n\n> Can you help?\n\nYes, a technician comes at 3.",
            Style::Inline,
        );
    }

    #[test]
    fn attributions_by_shape_in_any_language() {
        for attribution in [
            // Russian Gmail, with the date first.
            "Пн, 23 нояб. 2026 г. в 10:00, Example Support <support@example.com>:",
            "23.11.2026, 10:00 от Example Support <support@example.com>:",
            "Example Support <support@example.com> написал:",
            // Date first (Gmail in some locales).
            "2026-11-23 10:00 GMT+01:00 Example Support <support@example.com>:",
            // French over two lines.
            "Le lun. 23 nov. 2026 à 10:00, Example Support <\nsupport@example.com> a écrit :",
            // Japanese.
            "2026年11月23日(月) 10:00 Example Support <support@example.com>:",
        ] {
            shape(&format!("Erledigt.\n\n{attribution}\n{NOTE}"), "Erledigt.", Style::Top);
            shape(&format!("{attribution}\n{NOTE}\nErledigt."), "Erledigt.", Style::Bottom);
        }
    }

    #[test]
    fn header_blocks_and_separators_by_shape() {
        let original = note_unquoted();
        for head in [
            "Date: Mon, 23 Nov 2026 10:00\nFrom: Example Support <support@example.com>\nTo: Alice Jones <alice@example.com>\nSubject: [Support #1] Printer",
            "________________________________\nFrom: Example Support <support@example.com>\nSent: Monday, November 23, 2026 10:00 AM\nTo: Alice Jones <alice@example.com>\nSubject: [Support #1] Printer",
            "Von: Example Support <support@example.com>\nDatum: Montag, 23. November 2026 10:00\nAn: alice@example.com\nBetreff: x",
            "От: Example Support <support@example.com>\nОтправлено: 23 ноября 2026 г. 10:00\nКому: Alice <alice@example.com>\nТема: x",
            "De : Example Support <support@example.com>\nEnvoyé : lundi 23 novembre 2026 10:00\nÀ : alice@example.com\nObjet : x",
            "*From:* Example Support <support@example.com>\n*Sent:* Monday, November 23, 2026 10:00 AM\n*To:* alice@example.com",
            "-----Original Message-----\nFrom: x",
            "-----Ursprüngliche Nachricht-----\nVon: x",
            "----- Message d'origine -----\nDe : x",
            "-----Исходное сообщение-----",
            "---------- Forwarded message ---------",
        ] {
            let input = format!("Please restart.\n\nRegards,\nAlice\n\n{head}\n\n{original}");
            let e = extract(&input);
            assert_eq!(e.text, "Please restart.\n\nRegards,\nAlice", "{head}");
            assert!(
                !e.text.contains("alice@example.com"),
                "the agent's address in the quoted header block stays out"
            );
        }
        // Our marker unquoted: everything from it is ours.
        shape(
            "Yes.\n##- Please type your reply above this line -##\nTicket #1",
            "Yes.",
            Style::Plain,
        );
    }

    #[test]
    fn things_that_look_like_quotes_but_are_not() {
        for text in [
            "Just text.\nOn reflection, this stays.",
            "Here is the plan:\n1. restart\n2. wait",
            "From: the manual\nStep one: open it.",
            "Meeting at 10:30:\nbring the invoice",
            "----\nA table\n----",
        ] {
            shape(text, text, Style::Plain);
        }
    }

    #[test]
    fn our_footer_is_recognised_as_ours() {
        assert!(FOOTER_HOWTO.starts_with(HOWTO_PREFIX) && FOOTER_COMMANDS.starts_with(COMMANDS_PREFIX));
        let quoted: String = agent_footer().lines().map(|l| format!("> {l}\n")).collect();
        shape(
            &format!("> Can you help?\nYes.\n> And?\nNo.\n{quoted}"),
            "> Can you help?\n\nYes.\n\n> And?\n\nNo.",
            Style::Inline,
        );
    }

    #[test]
    fn hostile_shapes_cost_linear_time() {
        // 100,000 lines ending in ':' with blank runs between: quadratic work would never end here.
        let text = format!("{}> q\n", "On 2026-11-23 x@y.test:\n\n\n".repeat(100_000));
        let e = extract(&text);
        assert!(e.had_text);
        let blanks = format!("a\n{}b", "\n".repeat(200_000));
        assert_eq!(extract(&blanks).text, "a\n\nb");
    }

    #[test]
    fn commands_below_the_quote_are_read() {
        let input =
            format!("On 11/23/26 10:00 AM, Example Support wrote:\n{NOTE}\n#status pending\nPlease send a photo.");
        let r = parse_reply(&strip_quotes(&input), &no_templates);
        assert_eq!(r.commands, vec![Command::Status(Status::Pending)]);
        assert_eq!(r.body, "Please send a photo.");
        // Inline, a command right after the first quoted question.
        let r = parse_reply(
            &strip_quotes("> Can you help?\n#status pending\nYes.\n> Today?\nNo, tomorrow."),
            &no_templates,
        );
        assert_eq!(r.commands, vec![Command::Status(Status::Pending)]);
        assert_eq!(r.body, "> Can you help?\n\nYes.\n\n> Today?\n\nNo, tomorrow.");
        // Nothing but the quote: nothing to relay, and the mail had text.
        let e = extract(NOTE);
        assert_eq!((e.text.as_str(), e.had_text), ("", true));
    }

    proptest::proptest! {
        #[test]
        fn every_line_the_agent_wrote_survives_and_nothing_of_ours(
            above in proptest::collection::vec("[A-Za-z][a-z ,]{0,30}[a-z.!]", 0..4),
            below in proptest::collection::vec("[A-Za-z][a-z ,]{0,30}[a-z.!]", 0..4),
            style in 0u8..4,
        ) {
            let attribution = match style {
                0 => "On Mon, Nov 23, 2026 at 10:00 AM Example Support <support@example.com> wrote:\n",
                1 => "Am 23.11.2026 um 10:00 schrieb Example Support <support@example.com>:\n",
                2 => "Пн, 23 нояб. 2026 г. в 10:00, Example Support <support@example.com>:\n",
                _ => "",
            };
            let input = format!("{}\n\n{attribution}{NOTE}\n{}", above.join("\n"), below.join("\n"));
            let e = extract(&input);
            for line in above.iter().chain(below.iter()) {
                proptest::prop_assert!(e.text.contains(line.as_str()), "lost {line:?} from {input:?}: {:?}", e.text);
            }
            for ours in ["Please type your reply", "New ticket #1", "Assigned to", "Reply to this mail", "Commands on the first", "[ref:"] {
                proptest::prop_assert!(!e.text.contains(ours), "leaked {ours:?}: {:?}", e.text);
            }
        }
    }

    fn no_templates(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn commands_at_the_top() {
        let r = parse_reply(
            "#status pending\n#priority HIGH\n#tag vip, billing\n\nHello there.\n#not a command here",
            &no_templates,
        );
        assert_eq!(
            r.commands,
            vec![
                Command::Status(Status::Pending),
                Command::Priority(Priority::High),
                Command::Tag(vec!["vip".into(), "billing".into()])
            ]
        );
        assert_eq!(r.body, "Hello there.\n#not a command here");
        assert!(r.errors.is_empty());
    }

    #[test]
    fn command_errors_are_collected() {
        let r = parse_reply("#status done\n#frobnicate\n#cc add\n#assign\nText", &no_templates);
        assert_eq!(r.errors.len(), 4, "{:?}", r.errors);
        assert!(r.errors[0].contains("expected open, pending, resolved or closed"));
        assert!(r.errors[1].starts_with("#frobnicate: unknown command"));
        assert_eq!(r.body, "Text");
    }

    #[test]
    fn templates_are_inserted_where_they_stand() {
        let t = |name: &str| (name == "thanks").then(|| "Thank you for your patience.".to_string());
        let r = parse_reply("#note\nHi,\n#template thanks\nBye\n#template nope", &t);
        assert_eq!(r.commands, vec![Command::Note]);
        assert_eq!(r.body, "Hi,\nThank you for your patience.\nBye");
        assert_eq!(r.errors, vec!["#template nope: no template of that name".to_string()]);
    }

    #[test]
    fn commands_and_a_signature_relay_nothing() {
        let r = parse_reply("#status resolved\n\n-- \nAlice Jones\nExample Ltd", &no_templates);
        assert_eq!(r.commands, vec![Command::Status(Status::Resolved)]);
        assert_eq!(r.body, "");
        let r = parse_reply("Thanks!\n-- \nAlice", &no_templates);
        assert_eq!(r.body, "Thanks!\n-- \nAlice");
    }

    #[test]
    fn markdown_headings_are_not_commands() {
        let r = parse_reply("# Summary\nAll good", &no_templates);
        assert!(r.commands.is_empty() && r.errors.is_empty());
        assert_eq!(r.body, "# Summary\nAll good");
    }
}
