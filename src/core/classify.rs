//! Who sent a mail and whether it is automatic: a pure decision with reasons.
//!
//! Automatic and list mail still opens or joins tickets; the classification
//! only stops postdesk from answering it automatically.

use crate::core::model::InboundMessage;
use crate::core::settings::Settings;
use crate::core::token::Signer;

/// Our loop header: every mail postdesk sends carries it.
pub const LOOP_HEADER: &str = "X-Postdesk-Loop";

/// Who the sender is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    /// Anyone who is not an agent or us.
    Customer,
    /// An agent, by address (authentication comes with the agent issue).
    Agent(String),
    /// One of our own addresses, or mail carrying our loop header: dropped.
    Own(String),
}

/// The classification of one mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    /// Who sent it.
    pub sender: Sender,
    /// Why it is automatic, when it is (no automatic reply goes to it).
    pub auto: Option<String>,
    /// Whether it is a delivery status notification.
    pub bounce: bool,
}

impl Classification {
    /// A one-line description for `explain` and logs.
    pub fn describe(&self) -> String {
        let who = match &self.sender {
            Sender::Customer => "customer".to_string(),
            Sender::Agent(name) => format!("agent {name}"),
            Sender::Own(why) => format!("our own mail ({why})"),
        };
        let mut s = who;
        if self.bounce {
            s.push_str(", bounce (delivery status notification)");
        }
        if let Some(a) = &self.auto {
            s.push_str(&format!(", automatic: {a}"));
        }
        s
    }

    /// Whether an automatic reply (acknowledgement) may go to the sender.
    pub fn may_auto_reply(&self) -> bool {
        self.sender == Sender::Customer && self.auto.is_none() && !self.bounce
    }
}

/// Classifies a parsed mail. Our loop header counts only when its signature
/// holds for this mail's Message-ID (a copied header is a customer's text).
pub fn classify(msg: &InboundMessage, config: &Settings, signer: &Signer) -> Classification {
    let from = msg.from.as_ref().map(|m| m.email.as_str()).unwrap_or("");
    let ours = |v: &str| {
        msg.message_id
            .as_deref()
            .is_some_and(|id| signer.verify_loop_value(id, v))
    };
    let sender = if msg
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case(LOOP_HEADER) && ours(v))
    {
        Sender::Own(format!("carries our {LOOP_HEADER} header"))
    } else if !from.is_empty() && config.is_own_address(from) {
        Sender::Own(format!("from our address {from}"))
    } else if let Some(agent) = config.agent_by_email(from) {
        Sender::Agent(agent.name.clone())
    } else {
        Sender::Customer
    };
    let bounce = msg.content_type == "multipart/report" && msg.report_type.as_deref() == Some("delivery-status");
    Classification {
        sender,
        auto: auto_reason(msg, from),
        bounce,
    }
}

/// The domain part of our loop header for this instance (the sender signs it per mail).
pub fn loop_header_value(config: &Settings) -> String {
    config.desk.message_id_domain.clone()
}

fn auto_reason(msg: &InboundMessage, from: &str) -> Option<String> {
    for (name, value) in &msg.headers {
        let v = value.trim().to_ascii_lowercase();
        let reason = match name.as_str() {
            "auto-submitted" if v != "no" && !v.is_empty() => format!("Auto-Submitted: {v}"),
            "precedence" if matches!(v.as_str(), "bulk" | "junk" | "list" | "auto_reply") => {
                format!("Precedence: {v}")
            }
            "x-auto-response-suppress" if !v.is_empty() && v != "none" => {
                format!("X-Auto-Response-Suppress: {v}")
            }
            "list-id" => "List-Id present".into(),
            "list-unsubscribe" => "List-Unsubscribe present".into(),
            "x-autoreply" | "x-autorespond" => format!("{name} present"),
            "return-path" if v.is_empty() || v == "<>" => "empty Return-Path".into(),
            _ => continue,
        };
        return Some(reason);
    }
    let local = from.split('@').next().unwrap_or("");
    if matches!(local, "mailer-daemon" | "postmaster") {
        return Some(format!("sent by {local}"));
    }
    if from.is_empty() {
        return Some("no usable From address".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::settings::Limits;

    fn config() -> crate::adapters::config::Config {
        crate::adapters::config::test_config("[[agent]]\nname = \"Alice\"\nemail = \"alice@example.com\"\n")
    }

    fn check(headers: &str, expected: &str) {
        let raw = format!("{headers}\r\nSubject: s\r\n\r\nbody\r\n");
        let limits = Limits {
            max_message_bytes: 1 << 20,
            max_parts: 100,
            max_headers: 100,
            ..Limits::default()
        };
        let msg = crate::adapters::inbound::parse(raw.as_bytes(), &limits).unwrap();
        assert_eq!(
            classify(&msg, &config(), &Signer::new(b"k")).describe(),
            expected,
            "{headers}"
        );
    }

    #[test]
    fn classification_table() {
        check("From: Bob <bob@customer.test>", "customer");
        check("From: alice@example.com", "agent Alice");
        check("From: Alice <ALICE@Example.com>", "agent Alice");
        check(
            "From: support@example.com",
            "our own mail (from our address support@example.com)",
        );
        check(
            "From: support+12.abc@example.com",
            "our own mail (from our address support+12.abc@example.com)",
        );
        let looped = Signer::new(b"k").loop_value("pd.1.a.b@example.com", "example.com");
        check(
            &format!("From: x@y.test\r\nMessage-ID: <pd.1.a.b@example.com>\r\nX-Postdesk-Loop: {looped}"),
            "our own mail (carries our X-Postdesk-Loop header)",
        );
        // Copied into another mail, or unsigned: a customer's header.
        check(
            &format!("From: x@y.test\r\nMessage-ID: <new@y.test>\r\nX-Postdesk-Loop: {looped}"),
            "customer",
        );
        check("From: x@y.test\r\nX-Postdesk-Loop: example.com", "customer");
        check("From: x@y.test\r\nX-Postdesk-Loop: other.test", "customer");
        // Real out-of-office headers (Exchange, Gmail vacation, Zimbra).
        check(
            "From: bob@customer.test\r\nAuto-Submitted: auto-replied",
            "customer, automatic: Auto-Submitted: auto-replied",
        );
        check(
            "From: bob@customer.test\r\nAuto-Submitted: auto-generated",
            "customer, automatic: Auto-Submitted: auto-generated",
        );
        check("From: bob@customer.test\r\nAuto-Submitted: no", "customer");
        check(
            "From: bob@customer.test\r\nX-Auto-Response-Suppress: All",
            "customer, automatic: X-Auto-Response-Suppress: all",
        );
        check(
            "From: bob@customer.test\r\nPrecedence: bulk",
            "customer, automatic: Precedence: bulk",
        );
        check(
            "From: bob@customer.test\r\nPrecedence: junk",
            "customer, automatic: Precedence: junk",
        );
        check(
            "From: bob@customer.test\r\nPrecedence: list",
            "customer, automatic: Precedence: list",
        );
        check(
            "From: bob@customer.test\r\nPrecedence: auto_reply",
            "customer, automatic: Precedence: auto_reply",
        );
        check("From: bob@customer.test\r\nPrecedence: first-class", "customer");
        check(
            "From: news@shop.test\r\nList-Unsubscribe: <mailto:u@shop.test>",
            "customer, automatic: List-Unsubscribe present",
        );
        check(
            "From: l@lists.test\r\nList-Id: Users <users.lists.test>",
            "customer, automatic: List-Id present",
        );
        check(
            "From: bob@customer.test\r\nX-Autoreply: yes",
            "customer, automatic: x-autoreply present",
        );
        check(
            "From: bob@customer.test\r\nX-Autorespond: yes",
            "customer, automatic: x-autorespond present",
        );
        check(
            "Return-Path: <>\r\nFrom: bob@customer.test",
            "customer, automatic: empty Return-Path",
        );
        check(
            "From: MAILER-DAEMON@mx.test",
            "customer, automatic: sent by mailer-daemon",
        );
        check("From: postmaster@mx.test", "customer, automatic: sent by postmaster");
    }

    #[test]
    fn dsn_is_a_bounce() {
        let raw = "From: MAILER-DAEMON@mx.test\r\nTo: support@example.com\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\nFinal-Recipient: rfc822; gone@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: support@example.com\r\nMessage-ID: <pd.1.x.y@example.com>\r\n\r\n--b--\r\n";
        let limits = Limits {
            max_message_bytes: 1 << 20,
            max_parts: 100,
            max_headers: 100,
            ..Limits::default()
        };
        let msg = crate::adapters::inbound::parse(raw.as_bytes(), &limits).unwrap();
        let c = classify(&msg, &config(), &Signer::new(b"k"));
        assert!(c.bounce);
        assert!(!c.may_auto_reply());
        let report = msg.delivery_report.unwrap();
        assert_eq!(report.original_message_id.as_deref(), Some("pd.1.x.y@example.com"));
        assert_eq!(
            report.recipients,
            vec![(
                "gone@customer.test".to_string(),
                "failed".to_string(),
                "5.1.1".to_string()
            )]
        );
    }
}
