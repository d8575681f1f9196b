//! Agent replies: removing the quoted notification the way real mail clients
//! quote it, and reading the `#command` lines at the top. Pure functions.

use crate::model::{Priority, Status};

/// The line at the top of our notifications; everything from it down is ours.
pub const REPLY_MARKER: &str = "##- Please type your reply above this line -##";

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

/// Removes the quoted notification (our marker, attribution lines of Gmail,
/// Apple Mail, Thunderbird, Outlook, and `>` blocks) and trailing blank lines.
pub fn strip_quotes(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t.contains(REPLY_MARKER) || t.trim_start_matches('>').trim().contains(REPLY_MARKER) {
            end = i;
            break;
        }
        if is_attribution(t, lines.get(i + 1).map(|l| l.trim())) || is_outlook_header(&lines[i..]) {
            end = i;
            break;
        }
    }
    let kept: Vec<&str> = lines[..end]
        .iter()
        .copied()
        .filter(|l| !l.trim_start().starts_with('>'))
        .collect();
    let mut out = kept.join("\n");
    // An attribution split over two lines leaves its first half behind.
    while let Some(last) = out.lines().last() {
        let t = last.trim();
        if t.is_empty() || (is_attribution_start(t) && !t.ends_with('.')) {
            let cut = out.len() - last.len();
            out.truncate(cut.saturating_sub(1).min(out.len()));
            if cut == 0 {
                out.clear();
            }
        } else {
            break;
        }
    }
    out.trim_end().to_string()
}

const ATTRIBUTION_ENDS: &[&str] = &[
    "wrote:",
    "schrieb:",
    "a écrit :",
    "a écrit:",
    "escribió:",
    "schreef:",
    "ha scritto:",
    "skrev:",
    "napisał:",
    "kirjoitti:",
    "写道：",
    "写道:",
];

fn is_attribution_start(t: &str) -> bool {
    ["On ", "Am ", "Le ", "El ", "Op ", "Il ", "Den ", "W dniu ", "Em "]
        .iter()
        .any(|p| t.starts_with(p))
}

fn is_attribution(t: &str, next: Option<&str>) -> bool {
    let ends = |s: &str| ATTRIBUTION_ENDS.iter().any(|e| s.ends_with(e));
    if ends(t) && (is_attribution_start(t) || t.contains('@') || t.len() < 200) && !t.starts_with('>') {
        return is_attribution_start(t) || t.contains('<') || t.contains(',');
    }
    // Gmail wraps long attributions: "On Mon, ... Example Support <\nsupport@example.com> wrote:".
    is_attribution_start(t) && next.is_some_and(|n| ends(n) && n.len() < 120)
}

fn is_outlook_header(lines: &[&str]) -> bool {
    let t = lines[0].trim();
    if t.starts_with("-----Original Message-----") || t.starts_with("----- Original Message -----") {
        return true;
    }
    let from =
        |s: &str| s.starts_with("From:") || s.starts_with("Von:") || s.starts_with("De :") || s.starts_with("De:");
    let sent = |s: &str| {
        s.starts_with("Sent:") || s.starts_with("Gesendet:") || s.starts_with("Envoyé :") || s.starts_with("Date:")
    };
    let start = if t.chars().all(|c| c == '_') && t.len() >= 10 {
        1
    } else {
        0
    };
    let Some(first) = lines.get(start).map(|l| l.trim()) else {
        return false;
    };
    from(first) && lines.iter().skip(start + 1).take(4).any(|l| sent(l.trim()))
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
        body_lines.push(line.to_string());
    }
    out.body = body_lines.join("\n").trim().to_string();
    // A reply of commands and the client's automatic signature says nothing to the customer.
    let before_signature = out
        .body
        .split('\n')
        .take_while(|l| l.trim_end() != "--")
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
        other => {
            return Err(format!(
                "#{other}: unknown command (known: #note #status #priority #assign #take #queue #tag #untag #type #cc #template)"
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
        // Interleaved > lines are removed, the agent's words kept.
        check(
            "> question one\nanswer one\n> question two\nanswer two",
            "answer one\nanswer two",
        );
        // Nothing to strip.
        check(
            "Just text.\nOn reflection, this stays.",
            "Just text.\nOn reflection, this stays.",
        );
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
