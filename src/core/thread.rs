//! Threading: which ticket a mail belongs to. A pure function over the mail,
//! a read-only view of the index and `now`; the first rule that hits wins.
//!
//! 1. In-Reply-To/References naming a Message-ID we generated (signed, works without the index);
//! 2. In-Reply-To/References naming any Message-ID stored on, or referenced by, a ticket;
//! 3. a signed plus-address in To/Cc;
//! 4. a signed body token from our outgoing mail;
//! 5. the subject tag, only from a participant or an agent (a stranger opens a new linked ticket);
//! 6. otherwise a new ticket.
//!
//! A hit on a closed ticket, or a resolved one past the reopen window, opens a
//! new ticket linked to it.

use crate::core::model::InboundMessage;
use crate::core::model::{Status, Ticket, TicketId};
use crate::core::token::Signer;
use jiff::Timestamp;
use std::time::Duration;

/// What threading can read of the store.
pub trait ThreadIndex {
    /// The ticket a Message-ID is stored on or referenced by, and whether a
    /// message with that id is stored (`false`: only referenced so far).
    fn ticket_of_message_id(&self, id: &str) -> Option<(TicketId, bool)>;
    /// A ticket by number.
    fn ticket(&self, id: TicketId) -> Option<Ticket>;
}

/// Everything threading needs besides the mail and the index.
#[derive(Clone, Debug)]
pub struct ThreadContext<'a> {
    /// Verifies our tokens.
    pub signer: &'a Signer,
    /// The subject tag word.
    pub subject_tag: &'a str,
    /// The time of arrival.
    pub now: Timestamp,
    /// How long after resolution a reply still reopens.
    pub reopen_window: Duration,
    /// Whether the sender is a verified agent: subject tags are accepted from
    /// agents, and an agent acts on a closed ticket instead of opening a linked one.
    pub from_agent: bool,
    /// Whether the mail is history (backfilled, older than `backfill_window`):
    /// an archive's conversation stays one ticket, so it is added to the
    /// ticket it belongs to whatever that ticket's status.
    pub archived: bool,
}

/// Where a mail goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Appended to this ticket.
    Existing(TicketId),
    /// A new ticket.
    New,
    /// A new ticket linked to this one.
    NewLinked(TicketId),
}

/// The decision with the rule that made it and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Where the mail goes.
    pub outcome: Outcome,
    /// The rule number (1–6) that decided.
    pub rule: u8,
    /// A human-readable reason.
    pub reason: String,
}

impl Decision {
    /// The ticket the decision names (appended to, or linked from).
    pub fn ticket(&self) -> Option<TicketId> {
        match self.outcome {
            Outcome::Existing(t) | Outcome::NewLinked(t) => Some(t),
            Outcome::New => None,
        }
    }
}

/// Decides where a mail belongs.
pub fn thread(msg: &InboundMessage, index: &dyn ThreadIndex, cx: &ThreadContext<'_>) -> Decision {
    let refs = msg.referenced_ids();

    // Rule 1: our own signed Message-IDs.
    for id in &refs {
        if let Some(t) = cx.signer.parse_message_id(id)
            && let Some(ticket) = index.ticket(t)
        {
            return reopen_check(ticket, cx, 1, format!("answers our Message-ID <{id}>"));
        }
    }
    // Rule 2: any Message-ID known to the index. An id that is only referenced
    // (no mail with it is stored) binds only mail from that ticket's
    // participants or an agent: anyone can write a References header, so a
    // stranger must not pre-claim the id of someone else's mail.
    let from = msg.from.as_ref().map(|m| m.email.as_str()).unwrap_or("");
    let trusted = |ticket: &Ticket| cx.from_agent || ticket.is_participant(from);
    for id in &refs {
        if let Some((t, stored)) = index.ticket_of_message_id(id)
            && let Some(ticket) = index.ticket(t)
            && (stored || trusted(&ticket))
        {
            return reopen_check(ticket, cx, 2, format!("refers to <{id}>, known on ticket {t}"));
        }
    }
    // Rule 2, the other way round: a parent that arrives after a reply already
    // named it; again only from the ticket's participants.
    if let Some(id) = &msg.message_id
        && let Some((t, false)) = index.ticket_of_message_id(id)
        && let Some(ticket) = index.ticket(t)
        && trusted(&ticket)
    {
        return reopen_check(
            ticket,
            cx,
            2,
            format!("its Message-ID <{id}> is referenced on ticket {t}"),
        );
    }
    // Rule 3: signed plus-address.
    for rcpt in msg.to.iter().chain(msg.cc.iter()) {
        if let Some(t) = cx.signer.parse_plus_address(&rcpt.email)
            && let Some(ticket) = index.ticket(t)
        {
            return reopen_check(ticket, cx, 3, format!("sent to the ticket address {}", rcpt.email));
        }
    }
    // Rule 4: signed body token.
    if let Some(t) = cx.signer.find_body_token(&msg.text)
        && let Some(ticket) = index.ticket(t)
    {
        return reopen_check(ticket, cx, 4, format!("body carries the reference token of ticket {t}"));
    }
    // Rule 5: subject tag, from participants and agents only.
    if let Some(n) = crate::core::subject::find_tag(&msg.subject, cx.subject_tag)
        && let Some(ticket) = index.ticket(TicketId(n))
    {
        if cx.from_agent || ticket.is_participant(from) {
            return reopen_check(ticket, cx, 5, format!("subject tag #{n} from a participant"));
        }
        return Decision {
            outcome: Outcome::NewLinked(ticket.id),
            rule: 5,
            reason: format!("subject tag #{n} from {from}, who is not a participant: new ticket linked to it"),
        };
    }
    Decision {
        outcome: Outcome::New,
        rule: 6,
        reason: "no reference, address, token or tag matched".into(),
    }
}

fn reopen_check(ticket: Ticket, cx: &ThreadContext<'_>, rule: u8, reason: String) -> Decision {
    let id = ticket.id;
    if cx.from_agent || cx.archived {
        return Decision {
            outcome: Outcome::Existing(id),
            rule,
            reason,
        };
    }
    match ticket.status {
        Status::Closed => Decision {
            outcome: Outcome::NewLinked(id),
            rule,
            reason: format!("{reason}; ticket {id} is closed: new ticket linked to it"),
        },
        Status::Resolved
            if ticket
                .resolved_at
                .is_some_and(|r| cx.now.as_second() - r.as_second() > cx.reopen_window.as_secs() as i64) =>
        {
            Decision {
                outcome: Outcome::NewLinked(id),
                rule,
                reason: format!("{reason}; ticket {id} was resolved before the reopen window: new ticket linked to it"),
            }
        }
        _ => Decision {
            outcome: Outcome::Existing(id),
            rule,
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Mailbox;
    use std::collections::HashMap;

    struct Index {
        ids: HashMap<String, (TicketId, bool)>,
        tickets: HashMap<TicketId, Ticket>,
    }

    impl ThreadIndex for Index {
        fn ticket_of_message_id(&self, id: &str) -> Option<(TicketId, bool)> {
            self.ids.get(id).copied()
        }
        fn ticket(&self, id: TicketId) -> Option<Ticket> {
            self.tickets.get(&id).cloned()
        }
    }

    fn ticket(id: u64, status: Status, resolved_days_ago: Option<i64>) -> Ticket {
        let now = now();
        Ticket {
            status,
            participants: vec![Mailbox::new(None, "carol@customer.test")],
            resolved_at: resolved_days_ago.map(|d| Timestamp::from_second(now.as_second() - d * 86400).unwrap()),
            ..Ticket::new(
                TicketId(id),
                "Printer",
                Mailbox::new(None, "bob@customer.test"),
                "support",
                "general",
                now,
            )
        }
    }

    fn now() -> Timestamp {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    fn index() -> Index {
        let mut tickets = HashMap::new();
        tickets.insert(TicketId(1), ticket(1, Status::Open, None));
        tickets.insert(TicketId(2), ticket(2, Status::Closed, None));
        tickets.insert(TicketId(3), ticket(3, Status::Resolved, Some(2)));
        tickets.insert(TicketId(4), ticket(4, Status::Resolved, Some(30)));
        let mut ids = HashMap::new();
        ids.insert("orig@customer.test".to_string(), (TicketId(1), true));
        ids.insert("ghost-parent@customer.test".to_string(), (TicketId(1), false));
        ids.insert("closed@customer.test".to_string(), (TicketId(2), true));
        Index { ids, tickets }
    }

    fn msg(from: &str, subject: &str, irt: &[&str], to: &[&str], body: &str) -> InboundMessage {
        InboundMessage {
            language: None,
            sentiment: Default::default(),
            from: Some(Mailbox::new(None, from)),
            subject: subject.into(),
            in_reply_to: irt.iter().map(|s| s.to_string()).collect(),
            to: to.iter().map(|a| Mailbox::new(None, a)).collect(),
            text: body.into(),
            ..Default::default()
        }
    }

    fn check(m: InboundMessage, from_agent: bool, outcome: Outcome, rule: u8) {
        check_as(m, from_agent, false, outcome, rule)
    }

    fn check_as(m: InboundMessage, from_agent: bool, archived: bool, outcome: Outcome, rule: u8) {
        let signer = Signer::new(b"k");
        let cx = ThreadContext {
            signer: &signer,
            subject_tag: "Support",
            now: now(),
            reopen_window: Duration::from_secs(7 * 86400),
            from_agent,
            archived,
        };
        let d = thread(&m, &index(), &cx);
        assert_eq!((d.outcome, d.rule), (outcome, rule), "{}", d.reason);
    }

    #[test]
    fn rules_table() {
        let s = Signer::new(b"k");
        let ours = s.message_id(TicketId(1), "n1", "example.com");
        let ours_closed = s.message_id(TicketId(2), "n2", "example.com");
        let ours_unknown = s.message_id(TicketId(99), "n3", "example.com");
        let forged = ours.replacen("pd.1.", "pd.3.", 1);
        let plus = s.plus_address("support@example.com", TicketId(1));
        let token = s.body_token(TicketId(1));
        let stranger = "eve@elsewhere.test";
        let bob = "bob@customer.test";

        // 1: our signed id, even though the index does not know it.
        check(
            msg(stranger, "x", &[&ours], &[], ""),
            false,
            Outcome::Existing(TicketId(1)),
            1,
        );
        // 1 on a closed ticket: new linked.
        check(
            msg(bob, "x", &[&ours_closed], &[], ""),
            false,
            Outcome::NewLinked(TicketId(2)),
            1,
        );
        // 1 refused: ticket does not exist; forged signature.
        check(msg(bob, "x", &[&ours_unknown], &[], ""), false, Outcome::New, 6);
        check(msg(bob, "x", &[&forged], &[], ""), false, Outcome::New, 6);
        // 2: stored id and a referenced ghost parent.
        check(
            msg(stranger, "x", &["orig@customer.test"], &[], ""),
            false,
            Outcome::Existing(TicketId(1)),
            2,
        );
        // A referenced-but-unseen id binds participants (and agents) only.
        check(
            msg("carol@customer.test", "x", &["ghost-parent@customer.test"], &[], ""),
            false,
            Outcome::Existing(TicketId(1)),
            2,
        );
        check(
            msg("alice@example.com", "x", &["ghost-parent@customer.test"], &[], ""),
            true,
            Outcome::Existing(TicketId(1)),
            2,
        );
        check(
            msg(stranger, "x", &["ghost-parent@customer.test"], &[], ""),
            false,
            Outcome::New,
            6,
        );
        check(
            msg(bob, "x", &["closed@customer.test"], &[], ""),
            false,
            Outcome::NewLinked(TicketId(2)),
            2,
        );
        check(msg(bob, "x", &["unknown@x"], &[], ""), false, Outcome::New, 6);
        // A parent arriving after its reply: its own id is referenced on ticket 1.
        let mut parent = msg("carol@customer.test", "x", &[], &[], "");
        parent.message_id = Some("ghost-parent@customer.test".into());
        check(parent, false, Outcome::Existing(TicketId(1)), 2);
        // Pre-claimed: a stranger referenced Dave's id before Dave wrote; Dave's mail opens his own ticket.
        let mut dave = msg("dave@customer.test", "x", &[], &[], "");
        dave.message_id = Some("ghost-parent@customer.test".into());
        check(dave, false, Outcome::New, 6);
        // A stored id reused by another mail does not pull it in either.
        let mut reused = msg(stranger, "x", &[], &[], "");
        reused.message_id = Some("orig@customer.test".into());
        check(reused, false, Outcome::New, 6);
        // 3: plus-address; a forged one is ignored.
        check(
            msg(stranger, "x", &[], &[&plus], ""),
            false,
            Outcome::Existing(TicketId(1)),
            3,
        );
        check(
            msg(stranger, "x", &[], &["support+1.aaaaaaaaaa@example.com"], ""),
            false,
            Outcome::New,
            6,
        );
        // 4: body token, quoted.
        check(
            msg(stranger, "x", &[], &[], &format!("> {token}")),
            false,
            Outcome::Existing(TicketId(1)),
            4,
        );
        // 5: subject tag from requester, participant, agent; from a stranger: new linked.
        check(
            msg(bob, "Re: [Support #1] x", &[], &[], ""),
            false,
            Outcome::Existing(TicketId(1)),
            5,
        );
        check(
            msg("carol@customer.test", "AW: [Support #1]", &[], &[], ""),
            false,
            Outcome::Existing(TicketId(1)),
            5,
        );
        check(
            msg("alice@example.com", "[Support #1]", &[], &[], ""),
            true,
            Outcome::Existing(TicketId(1)),
            5,
        );
        check(
            msg(stranger, "Re: [Support #1] x", &[], &[], ""),
            false,
            Outcome::NewLinked(TicketId(1)),
            5,
        );
        // 5: tag of a ticket that does not exist.
        check(msg(bob, "[Support #77] x", &[], &[], ""), false, Outcome::New, 6);
        // Agents act on closed tickets; only customers open linked ones.
        check(
            msg("alice@example.com", "x", &[&ours_closed], &[], ""),
            true,
            Outcome::Existing(TicketId(2)),
            1,
        );
        // Reopen window: resolved 2 days ago reopens; 30 days ago opens a linked ticket.
        check(
            msg(bob, "[Support #3] x", &[], &[], ""),
            false,
            Outcome::Existing(TicketId(3)),
            5,
        );
        check(
            msg(bob, "[Support #4] x", &[], &[], ""),
            false,
            Outcome::NewLinked(TicketId(4)),
            5,
        );
        // 6
        check(msg(bob, "Printer", &[], &[], ""), false, Outcome::New, 6);
    }

    #[test]
    fn history_stays_on_its_ticket_whatever_its_status() {
        let bob = "bob@customer.test";
        // What would open a linked ticket if it arrived now is added to its
        // ticket as history: a closed one, one resolved before the reopen window.
        check_as(
            msg(bob, "x", &["closed@customer.test"], &[], ""),
            false,
            true,
            Outcome::Existing(TicketId(2)),
            2,
        );
        check_as(
            msg(bob, "[Support #4] x", &[], &[], ""),
            false,
            true,
            Outcome::Existing(TicketId(4)),
            5,
        );
        // Nothing else changes: a mail naming no ticket still opens one.
        check_as(msg(bob, "Printer", &[], &[], ""), false, true, Outcome::New, 6);
    }

    #[test]
    fn first_hit_wins() {
        let s = Signer::new(b"k");
        let plus = s.plus_address("support@example.com", TicketId(3));
        // Headers point at 1, the plus-address at 3: rule 2 wins.
        check(
            msg(stranger(), "x", &["orig@customer.test"], &[&plus], ""),
            false,
            Outcome::Existing(TicketId(1)),
            2,
        );
    }

    fn stranger() -> &'static str {
        "eve@elsewhere.test"
    }
}
