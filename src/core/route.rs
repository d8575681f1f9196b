//! Routing rules: which queue, priority, type, tags and assignee a new ticket
//! gets. Pure: the mail and the rules in, the merged actions and a trace out.

use crate::core::model::InboundMessage;
use crate::core::settings::{Condition, Field, Rule, RuleActions};

/// What one rule did, for `explain` and the event log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub name: String,
    /// Whether all its conditions held.
    pub matched: bool,
    /// Why it matched, or the condition it failed on, or why it was not evaluated.
    pub detail: String,
}

/// The result of routing a mail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// The merged actions: the first rule to set a field wins; tags add up.
    pub actions: RuleActions,
    /// Every rule, in order.
    pub trace: Vec<RuleTrace>,
}

impl Routing {
    /// Names of the rules that matched.
    pub fn matched(&self) -> Vec<String> {
        self.trace
            .iter()
            .filter(|t| t.matched)
            .map(|t| t.name.clone())
            .collect()
    }
}

/// Runs the rules in order over a mail that arrived through `mailbox`.
pub fn route(msg: &InboundMessage, mailbox: &str, rules: &[Rule]) -> Routing {
    route_on(msg, mailbox, rules, false)
}

/// The rules `on = "reply"` for a customer's follow-up to an existing ticket.
pub fn route_reply(msg: &InboundMessage, mailbox: &str, rules: &[Rule]) -> Routing {
    route_on(msg, mailbox, rules, true)
}

fn route_on(msg: &InboundMessage, mailbox: &str, rules: &[Rule], on_reply: bool) -> Routing {
    let mut out = Routing::default();
    let mut stopped_by: Option<String> = None;
    for rule in rules.iter().filter(|r| r.on_reply == on_reply) {
        if let Some(by) = &stopped_by {
            out.trace.push(RuleTrace {
                name: rule.name.clone(),
                matched: false,
                detail: format!("not evaluated: rule {by:?} matched without continue"),
            });
            continue;
        }
        match failed_condition(msg, mailbox, rule) {
            Some(why) => out.trace.push(RuleTrace {
                name: rule.name.clone(),
                matched: false,
                detail: why,
            }),
            None => {
                merge(&mut out.actions, &rule.set);
                out.trace.push(RuleTrace {
                    name: rule.name.clone(),
                    matched: true,
                    detail: if rule.when.is_empty() {
                        "no conditions".into()
                    } else {
                        "every condition held".into()
                    },
                });
                if !rule.cont {
                    stopped_by = Some(rule.name.clone());
                }
            }
        }
    }
    out
}

fn merge(into: &mut RuleActions, from: &RuleActions) {
    if into.queue.is_none() {
        into.queue = from.queue.clone();
    }
    if into.priority.is_none() {
        into.priority = from.priority;
    }
    if into.kind.is_none() {
        into.kind = from.kind.clone();
    }
    if into.assignee.is_none() {
        into.assignee = from.assignee.clone();
    }
    for t in &from.tags {
        if !into.tags.contains(t) {
            into.tags.push(t.clone());
        }
    }
    for n in &from.notify {
        if !into.notify.contains(n) {
            into.notify.push(n.clone());
        }
    }
}

/// The first condition that does not hold, described; `None` when all hold.
fn failed_condition(msg: &InboundMessage, mailbox: &str, rule: &Rule) -> Option<String> {
    for c in &rule.when {
        match c {
            Condition::HasAttachment(want) => {
                let has = !msg.attachments.is_empty();
                if has != *want {
                    return Some(format!("has_attachment is {has}"));
                }
            }
            Condition::Sentiment { below, threshold } => {
                let v = msg.sentiment.value();
                let holds = if *below { v < *threshold } else { v > *threshold };
                if !holds {
                    let key = if *below { "sentiment_below" } else { "sentiment_above" };
                    return Some(format!("{key} {threshold}: the text's sentiment is {v}"));
                }
            }
            Condition::Intent {
                labels,
                min_confidence,
                negate,
            } => {
                let hit = msg
                    .intent
                    .as_ref()
                    .is_some_and(|i| labels.contains(&i.label) && i.confidence >= *min_confidence);
                if hit == *negate {
                    let read = msg
                        .intent
                        .as_ref()
                        .map(|i| format!("{} with confidence {}", i.label, i.confidence))
                        .unwrap_or_else(|| "not told".into());
                    let key = if *negate { "not_intent" } else { "intent" };
                    let min = if *min_confidence > 0.0 {
                        format!(" (confidence ≥ {min_confidence})")
                    } else {
                        String::new()
                    };
                    return Some(format!("{key} {}{min}: the intent read is {read}", labels.join(" | ")));
                }
            }
            Condition::Language { codes, negate } => {
                let hit = msg.language.as_ref().is_some_and(|l| codes.contains(l));
                if hit == *negate {
                    let lang = msg.language.as_deref().unwrap_or("not told");
                    let key = if *negate { "not_language" } else { "language" };
                    return Some(format!("{key} {}: the text's language is {lang}", codes.join(" | ")));
                }
            }
            Condition::Matches {
                field,
                key,
                patterns,
                negate,
            } => {
                let values = values(msg, mailbox, field);
                let hit = patterns
                    .iter()
                    .find(|p| values.iter().any(|v| p.is_match(v)))
                    .map(|p| p.as_str().to_string());
                match (hit, negate) {
                    (None, false) => {
                        let shown: Vec<&str> = patterns.iter().map(|p| p.as_str()).collect();
                        return Some(format!("{key} did not match {}", shown.join(" | ")));
                    }
                    (Some(p), true) => return Some(format!("{key}: {p} matched")),
                    _ => {}
                }
            }
        }
    }
    None
}

fn values(msg: &InboundMessage, mailbox: &str, field: &Field) -> Vec<String> {
    match field {
        Field::Subject => vec![msg.subject.clone()],
        Field::Body => vec![msg.text.clone()],
        Field::From => msg.from.iter().map(|m| m.email.clone()).collect(),
        Field::To => msg.to.iter().map(|m| m.email.clone()).collect(),
        Field::Cc => msg.cc.iter().map(|m| m.email.clone()).collect(),
        Field::Mailbox => vec![mailbox.to_string()],
        Field::Header(name) => msg
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect(),
        Field::Customer(name) => msg.customer.get(name).cloned().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Mailbox, Priority};

    fn rules(text: &str) -> Vec<Rule> {
        let base = "[instance]\nname = \"x\"\ndata_dir = \"d\"\nsecret_env = \"S\"\n[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nmaildir = { path = \"m\" }\n[outgoing]\nfile = { path = \"o\" }\n[[agent]]\nname = \"Alice\"\nemail = \"alice@example.com\"\n[[queue]]\nname = \"billing\"\n[[queue]]\nname = \"general\"\n";
        crate::adapters::config::parse(&format!("{base}{text}"), std::path::Path::new("t"))
            .unwrap()
            .settings
            .rules
    }

    fn msg(from: &str, subject: &str, body: &str, headers: &[(&str, &str)]) -> InboundMessage {
        InboundMessage {
            language: None,
            sentiment: Default::default(),
            from: Some(Mailbox::new(None, from)),
            to: vec![Mailbox::new(None, "support@example.com")],
            subject: subject.into(),
            text: body.into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    const RULES: &str = r#"
[[rule]]
name = "money"
when.subject = ["(?i)\\binvoice\\b", "(?i)\\brefund\\b"]
when.not_from = "@partner\\.test$"
set.queue = "billing"
set.priority = "high"
set.tags = ["billing"]
continue = true

[[rule]]
name = "vip"
when."header.x-customer-tier" = "(?i)^gold$"
set.priority = "urgent"
set.tags = ["vip"]
set.assignee = "alice"

[[rule]]
name = "catch-all"
set.tags = ["triage"]
"#;

    fn check(m: InboundMessage, matched: &[&str], queue: Option<&str>, priority: Option<Priority>, tags: &[&str]) {
        let r = route(&m, "support", &rules(RULES));
        assert_eq!(r.matched(), matched, "{:?}", r.trace);
        assert_eq!(r.actions.queue.as_deref(), queue);
        assert_eq!(r.actions.priority, priority);
        assert_eq!(r.actions.tags, tags);
    }

    #[test]
    fn rules_table() {
        // money continues; vip does not hold; catch-all adds its tag.
        check(
            msg("bob@customer.test", "Invoice 42 wrong", "", &[]),
            &["money", "catch-all"],
            Some("billing"),
            Some(Priority::High),
            &["billing", "triage"],
        );
        // A list means any.
        check(
            msg("bob@customer.test", "REFUND please", "", &[]),
            &["money", "catch-all"],
            Some("billing"),
            Some(Priority::High),
            &["billing", "triage"],
        );
        // not_from excludes partners.
        check(
            msg("x@partner.test", "invoice", "", &[]),
            &["catch-all"],
            None,
            None,
            &["triage"],
        );
        // vip matches and stops: the catch-all is not evaluated; the first priority set wins.
        check(
            msg("bob@customer.test", "invoice", "", &[("x-customer-tier", "Gold")]),
            &["money", "vip"],
            Some("billing"),
            Some(Priority::High),
            &["billing", "vip"],
        );
        check(
            msg("bob@customer.test", "hello", "", &[]),
            &["catch-all"],
            None,
            None,
            &["triage"],
        );
    }

    #[test]
    fn trace_says_where_a_rule_failed() {
        let r = route(
            &msg("bob@customer.test", "Hello", "", &[("x-customer-tier", "gold")]),
            "support",
            &rules(RULES),
        );
        assert_eq!(
            r.trace[0].detail,
            "subject did not match (?i)\\binvoice\\b | (?i)\\brefund\\b"
        );
        assert!(r.trace[1].matched);
        assert_eq!(r.actions.assignee.as_deref(), Some("Alice"));
        assert_eq!(
            r.trace[2].detail,
            "not evaluated: rule \"vip\" matched without continue"
        );
        let r = route(&msg("x@partner.test", "invoice", "", &[]), "support", &rules(RULES));
        assert_eq!(r.trace[0].detail, "not_from: @partner\\.test$ matched");
    }

    #[test]
    fn attachments_mailbox_and_body() {
        let rs = rules(
            "[[rule]]\nname = \"a\"\nwhen.has_attachment = true\nwhen.mailbox = \"^support$\"\nwhen.body = \"(?i)error code \\\\d+\"\nset.type = \"bug\"\n",
        );
        let mut m = msg("b@c.test", "s", "We see Error code 42", &[]);
        assert!(
            route(&m, "support", &rs).trace[0]
                .detail
                .starts_with("has_attachment is false")
        );
        m.attachments.push("log.txt".into());
        let r = route(&m, "support", &rs);
        assert_eq!(r.actions.kind.as_deref(), Some("bug"));
        assert!(!route(&m, "billing", &rs).trace[0].matched);
    }
}
