//! Extractive summaries of a conversation for the agent who takes it over:
//! what the customer asked, what we answered and what they tried, the open
//! question, and the facts (sentiment, SLA time left). Sentences are taken
//! from the messages as written (quotes, greetings and signatures left out),
//! never made up, and the same thread always gives the same summary.

use crate::core::model::{Direction, MessageKind, MessageRecord, Status, Ticket};
use jiff::Timestamp;

/// A thread gets a summary in customer-reply notifications from this many messages on.
pub const SUMMARY_FROM: usize = 4;

/// Longest sentence kept (characters); longer ones are cut with `…`.
const MAX_SENTENCE: usize = 160;

/// Who wrote a turn of the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// The customer (or another participant).
    Customer,
    /// A public reply of ours.
    Agent,
    /// An internal note.
    Note,
}

/// One message of the conversation as the summary reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// Who wrote it.
    pub who: Who,
    /// Its text.
    pub text: String,
}

/// The turns of a ticket's stored messages (automatic mail, bounces and our
/// system mail left out), in order.
pub fn turns(history: &[MessageRecord]) -> Vec<Turn> {
    history
        .iter()
        .filter_map(|m| {
            let who = match (m.direction, m.kind) {
                (Direction::Inbound, MessageKind::Customer) => Who::Customer,
                (Direction::Outbound, MessageKind::Agent) => Who::Agent,
                (_, MessageKind::Note) => Who::Note,
                _ => return None,
            };
            Some(Turn {
                who,
                text: m.text.clone(),
            })
        })
        .collect()
}

/// The conversation so far followed by the turn being written now.
pub fn followed_by(history: &[Turn], who: Who, text: &str) -> Vec<Turn> {
    let mut all = history.to_vec();
    all.push(Turn {
        who,
        text: text.to_string(),
    });
    all
}

/// Lines that end a message's own text: signatures and sign-offs.
fn ends_text(line: &str) -> bool {
    let l = line.trim().to_lowercase();
    let short = l.split_whitespace().count() <= 4;
    line.trim_end() == "--"
        || line.starts_with("-- ")
        || l.starts_with("sent from my")
        || short
            && [
                "best regards",
                "kind regards",
                "regards",
                "best,",
                "thanks,",
                "thank you,",
                "cheers",
                "mit freundlichen grüßen",
                "viele grüße",
                "beste grüße",
            ]
            .iter()
            .any(|s| l.starts_with(s))
}

/// A greeting or courtesy that says nothing of the matter.
fn courtesy(sentence: &str) -> bool {
    let l = sentence.to_lowercase();
    let words = l.split_whitespace().count();
    let opens = [
        "hello",
        "hi",
        "hey",
        "dear",
        "good morning",
        "good afternoon",
        "hallo",
        "guten tag",
        "liebe",
        "lieber",
        "sehr geehrte",
    ];
    let thanks = ["thanks", "thank you", "many thanks", "danke", "vielen dank"];
    (words <= 5 && opens.iter().any(|o| l.starts_with(o))) || (words <= 6 && thanks.iter().any(|t| l.starts_with(t)))
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A sentence without the greeting it opens with (`Hallo, gibt es …` → `gibt es …`).
fn without_greeting(s: &str) -> String {
    if let Some((head, rest)) = s.split_once(", ")
        && head.split_whitespace().count() <= 3
        && courtesy(head)
        && !rest.trim().is_empty()
    {
        return rest.trim().to_string();
    }
    s.to_string()
}

/// The sentences of a message's own text, in order.
pub fn sentences(text: &str) -> Vec<String> {
    let own = crate::core::reply::strip_quotes(text);
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in own.lines() {
        if ends_text(line) {
            break;
        }
        let t = line.trim();
        // An agent's `#command` lines say what was done, not what was written.
        if t.starts_with('#') && t[1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue;
        }
        if t.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        // A line of its own (a greeting, a list item) ends what came before.
        let own_line = t.ends_with(',') || t.starts_with(['-', '*', '•']) || t.ends_with(':');
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(t.trim_start_matches(['-', '*', '•', ' ']));
        if own_line {
            paragraphs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    let mut out = Vec::new();
    for p in paragraphs {
        let mut start = 0;
        let chars: Vec<(usize, char)> = p.char_indices().collect();
        for (i, &(at, c)) in chars.iter().enumerate() {
            let next_is_space = chars.get(i + 1).is_none_or(|(_, n)| n.is_whitespace());
            if matches!(c, '.' | '!' | '?') && next_is_space {
                out.push(p[start..at + c.len_utf8()].trim().to_string());
                start = at + c.len_utf8();
            }
        }
        if start < p.len() {
            out.push(p[start..].trim().to_string());
        }
    }
    out.into_iter()
        .map(|s| capitalized(&without_greeting(s.trim_end_matches(',').trim())))
        .filter(|s| s.chars().filter(|c| c.is_alphabetic()).count() >= 3 && !courtesy(s))
        .map(|s| cut(&s))
        .collect()
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_SENTENCE {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX_SENTENCE - 1).collect();
    if let Some(space) = t.rfind(' ').filter(|&i| i > MAX_SENTENCE / 2) {
        t.truncate(space);
    }
    format!("{}…", t.trim_end_matches([',', ';', ' ']))
}

/// Words that say the customer tried something already.
const TRIED: [&str; 13] = [
    "tried",
    "already",
    "restarted",
    "rebooted",
    "reinstalled",
    "cleared",
    "reset",
    "checked",
    "updated",
    "versucht",
    "bereits",
    "neu gestartet",
    "neu installiert",
];

fn mentions_trying(sentence: &str) -> bool {
    let l = sentence.to_lowercase();
    TRIED.iter().any(|w| {
        l.match_indices(w).any(|(i, _)| {
            let before = l[..i].chars().next_back();
            let after = l[i + w.len()..].chars().next();
            before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
        })
    })
}

/// A stretch of time as people read it: `45 min`, `2 h 05 min`, `3 d 4 h`
/// (summaries and SLA escalations).
pub(crate) fn span(seconds: i64) -> String {
    let m = seconds.max(0) / 60;
    let (d, h, m) = (m / 1440, (m % 1440) / 60, m % 60);
    match (d, h) {
        (0, 0) => format!("{m} min"),
        (0, _) => format!("{h} h {m:02} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// The SLA deadlines still running, as time left or overdue.
fn deadlines(ticket: &Ticket, now: Timestamp) -> Vec<String> {
    if !ticket.is_active() {
        return Vec::new();
    }
    if ticket.sla.paused_at.is_some() || ticket.status == Status::Pending {
        return vec!["SLA paused (pending)".into()];
    }
    let mut out = Vec::new();
    let running = [
        (
            "first response",
            ticket
                .sla
                .first_response_due
                .filter(|_| ticket.first_response_at.is_none()),
        ),
        ("next response", ticket.sla.next_response_due),
        ("resolution", ticket.sla.resolution_due),
    ];
    for (what, due) in running {
        let Some(due) = due else { continue };
        let left = due.as_second() - now.as_second();
        out.push(if left >= 0 {
            format!("{what} due in {}", span(left))
        } else {
            format!("{what} overdue by {}", span(-left))
        });
    }
    out
}

/// The summary block of a conversation (`turns`, oldest first, the newest
/// message included) at `now`; empty when there is no customer message.
pub fn summary(ticket: &Ticket, turns: &[Turn], now: Timestamp) -> String {
    let customer: Vec<&Turn> = turns.iter().filter(|t| t.who == Who::Customer).collect();
    let Some(first) = customer.first() else {
        return String::new();
    };
    let replies = turns.iter().filter(|t| t.who == Who::Agent).count();
    let notes = turns.iter().filter(|t| t.who == Who::Note).count();
    let mut out = format!(
        "Summary of #{} ({} message{}: {} from the customer, {} repl{} from us{}):\n",
        ticket.id,
        turns.len(),
        if turns.len() == 1 { "" } else { "s" },
        customer.len(),
        replies,
        if replies == 1 { "y" } else { "ies" },
        match notes {
            0 => String::new(),
            1 => ", 1 note".into(),
            n => format!(", {n} notes"),
        }
    );
    // What was asked: the first message's first sentence, and its first question when that comes later.
    let opening = sentences(&first.text);
    let mut asked = opening.first().cloned().unwrap_or_else(|| "(no text)".into());
    if let Some(q) = opening.iter().skip(1).take(6).find(|s| s.ends_with('?'))
        && !asked.ends_with('?')
    {
        asked = format!("{asked} {q}");
    }
    out.push_str(&format!("- Asked: {asked}\n"));
    // What we answered: the first sentences of our latest reply.
    let last_reply = turns.iter().rposition(|t| t.who == Who::Agent);
    match last_reply {
        Some(i) => {
            let said = sentences(&turns[i].text);
            let mut answer = said.first().cloned().unwrap_or_else(|| "(no text)".into());
            if let Some(second) = said.get(1)
                && answer.chars().count() + second.chars().count() < MAX_SENTENCE
            {
                answer = format!("{answer} {second}");
            }
            out.push_str(&format!("- Answered: {answer}\n"));
        }
        None => out.push_str("- Answered: nothing yet\n"),
    }
    // What the customer says they tried, and what the notes say.
    let tried: Vec<String> = customer
        .iter()
        .flat_map(|t| sentences(&t.text))
        .filter(|s| mentions_trying(s))
        .take(2)
        .collect();
    if !tried.is_empty() {
        out.push_str(&format!("- Tried: {}\n", tried.join(" ")));
    }
    if let Some(note) = turns.iter().rev().find(|t| t.who == Who::Note)
        && let Some(s) = sentences(&note.text).into_iter().next()
    {
        out.push_str(&format!("- Latest note: {s}\n"));
    }
    // The open question: the customer's latest question since our last reply.
    let since = last_reply.map_or(0, |i| i + 1);
    let after: Vec<&Turn> = turns[since..].iter().filter(|t| t.who == Who::Customer).collect();
    let open = after
        .iter()
        .rev()
        .find_map(|t| sentences(&t.text).into_iter().rev().find(|s| s.ends_with('?')))
        .or_else(|| after.last().and_then(|t| sentences(&t.text).into_iter().next()));
    let asked_back = last_reply
        .filter(|_| open.is_none())
        .and_then(|i| sentences(&turns[i].text).into_iter().rev().find(|s| s.ends_with('?')));
    match (open, asked_back) {
        (Some(q), _) => out.push_str(&format!("- Open: {q}\n")),
        (None, Some(q)) => out.push_str(&format!("- Open: waiting on the customer: {q}\n")),
        (None, None) => out.push_str("- Open: nothing; we answered last\n"),
    }
    let mut facts = Vec::new();
    if let Some(s) = ticket.sentiment.filter(|s| s.value() != 0.0) {
        let mut f = format!("sentiment {:+.2}", s.value());
        if let Some(t) = ticket.sentiment_trend.filter(|t| t.value() != 0.0) {
            f.push_str(&format!(" (trend {:+.2})", t.value()));
        }
        facts.push(f);
    }
    facts.extend(deadlines(ticket, now));
    if !facts.is_empty() {
        out.push_str(&format!("- Facts: {}\n", facts.join(" · ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_leave_out_greetings_quotes_and_signatures() {
        let text = "Hi Alice,\n\nthe export fails since Monday. I already restarted the server!\nCan you look at it?\n\nThanks,\nBob\n-- \nBob Big, Acme\n\nOn Monday Alice wrote:\n> What fails?";
        assert_eq!(
            sentences(text),
            [
                "The export fails since Monday.",
                "I already restarted the server!",
                "Can you look at it?"
            ]
        );
    }

    #[test]
    fn trying_is_a_whole_word_and_spans_read_well() {
        assert!(mentions_trying("I already cleared the cache."));
        assert!(!mentions_trying("The preset is wrong."));
        assert_eq!(
            (span(45 * 60), span(125 * 60), span(27 * 3600)),
            ("45 min".into(), "2 h 05 min".into(), "1 d 3 h".into())
        );
    }
}
