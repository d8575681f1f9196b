//! Signed tokens that tie mail to a ticket without the index: our Message-IDs,
//! the plus-address of a ticket, and the reference line in our mail bodies.
//!
//! Each carries the ticket number and a truncated HMAC-SHA256 over it with the
//! instance secret, so a reply threads even if the Message-ID index is lost,
//! and nobody can forge a token for a ticket they have not seen.

use crate::core::model::TicketId;
use ring::hmac;

/// Signs and verifies tokens with the instance secret.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

/// Length of the signature part of a token, in base32 characters (50 bits).
const SIG_LEN: usize = 10;

impl Signer {
    /// A signer for the given secret bytes.
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn sign(&self, purpose: &str, payload: &str) -> String {
        let tag = hmac::sign(&self.key, format!("{purpose}|{payload}").as_bytes());
        let mut s = base32(tag.as_ref());
        s.truncate(SIG_LEN);
        s
    }

    fn verify(&self, purpose: &str, payload: &str, sig: &str) -> bool {
        constant_time_eq(
            self.sign(purpose, payload).as_bytes(),
            sig.to_ascii_lowercase().as_bytes(),
        )
    }

    /// A Message-ID (without `<>`) that encodes `ticket`; `nonce` makes it unique.
    pub fn message_id(&self, ticket: TicketId, nonce: &str, domain: &str) -> String {
        let payload = format!("{}.{}", ticket.0, nonce);
        format!("pd.{payload}.{}@{domain}", self.sign("mid", &payload))
    }

    /// A Message-ID signed for one agent (`agent` is the agent's slug): an agent's
    /// reply to it proves the reply answers mail we sent that agent.
    pub fn agent_message_id(&self, ticket: TicketId, agent: &str, nonce: &str, domain: &str) -> String {
        let payload = format!("{}.{}.{}", ticket.0, nonce, agent);
        format!("pd.{payload}.{}@{domain}", self.sign("mid", &payload))
    }

    /// The ticket of one of our Message-IDs, if the signature holds.
    pub fn parse_message_id(&self, id: &str) -> Option<TicketId> {
        self.parse_message_id_full(id).map(|(t, _)| t)
    }

    /// The ticket and, for agent-signed ids, the agent slug of one of our Message-IDs.
    pub fn parse_message_id_full(&self, id: &str) -> Option<(TicketId, Option<String>)> {
        let id = id.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, _) = id.rsplit_once('@')?;
        let rest = local.strip_prefix("pd.")?;
        let (payload, sig) = rest.rsplit_once('.')?;
        let parts: Vec<&str> = payload.split('.').collect();
        let ticket: u64 = parts.first()?.parse().ok()?;
        let agent = match parts.len() {
            2 => None,
            3 => Some(parts[2].to_string()),
            _ => return None,
        };
        self.verify("mid", payload, sig).then_some((TicketId(ticket), agent))
    }

    /// The signed plus-address of a ticket on a support address: `support+1042.k3j9...@example.com`.
    pub fn plus_address(&self, support: &str, ticket: TicketId) -> String {
        let (local, domain) = crate::core::settings::split_address(support);
        let local = local.split('+').next().unwrap_or(local);
        format!(
            "{local}+{}.{}@{domain}",
            ticket.0,
            self.sign("plus", &ticket.0.to_string())
        )
    }

    /// The plus-address of a ticket signed for one agent: `support+1042.alice.k3j9...@example.com`.
    pub fn agent_plus_address(&self, support: &str, ticket: TicketId, agent: &str) -> String {
        let (local, domain) = crate::core::settings::split_address(support);
        let local = local.split('+').next().unwrap_or(local);
        let payload = format!("{}.{agent}", ticket.0);
        format!("{local}+{payload}.{}@{domain}", self.sign("plus", &payload))
    }

    /// The ticket of a signed plus-address, if the signature holds.
    pub fn parse_plus_address(&self, address: &str) -> Option<TicketId> {
        self.parse_plus_address_full(address).map(|(t, _)| t)
    }

    /// The ticket and, for agent addresses, the agent slug of a signed plus-address.
    pub fn parse_plus_address_full(&self, address: &str) -> Option<(TicketId, Option<String>)> {
        let (local, _) = address.rsplit_once('@')?;
        let (_, tag) = local.split_once('+')?;
        let tag = tag.to_ascii_lowercase();
        let (payload, sig) = tag.rsplit_once('.')?;
        let (ticket, agent) = match payload.split_once('.') {
            Some((t, a)) => (t, Some(a.to_string())),
            None => (payload, None),
        };
        let n: u64 = ticket.parse().ok()?;
        self.verify("plus", payload, sig).then_some((TicketId(n), agent))
    }

    /// The value of our loop header on the mail with `message_id`:
    /// `domain; signature`. It is bound to that mail, so a customer who copies
    /// it from an acknowledgement into a new mail copies nothing that counts.
    pub fn loop_value(&self, message_id: &str, domain: &str) -> String {
        format!("{domain}; {}", self.sign("loop", message_id))
    }

    /// Whether `value` is our loop header for the mail with `message_id`.
    pub fn verify_loop_value(&self, message_id: &str, value: &str) -> bool {
        value
            .rsplit_once(';')
            .is_some_and(|(_, sig)| self.verify("loop", message_id, sig.trim()))
    }

    /// The token of a ticket's signed survey links.
    pub fn survey_token(&self, ticket: TicketId) -> String {
        self.sign("csat", &ticket.0.to_string())
    }

    /// Whether `token` is the survey token of `ticket`.
    pub fn verify_survey_token(&self, ticket: TicketId, token: &str) -> bool {
        self.verify("csat", &ticket.0.to_string(), token)
    }

    /// The token of a ticket's status page link `/t/{ticket}/{token}`: it
    /// opens the conversation, so it is long (26 base32 characters, 130 bits).
    pub fn status_token(&self, ticket: TicketId) -> String {
        self.sign_long("status", &ticket.0.to_string())
    }

    /// Whether `token` is the status token of `ticket`.
    pub fn verify_status_token(&self, ticket: TicketId, token: &str) -> bool {
        constant_time_eq(
            self.status_token(ticket).as_bytes(),
            token.to_ascii_lowercase().as_bytes(),
        )
    }

    /// A signature of 26 base32 characters (130 bits) for links that grant
    /// reading: a web page, not a reply address.
    pub fn sign_long(&self, purpose: &str, payload: &str) -> String {
        let tag = hmac::sign(&self.key, format!("{purpose}|{payload}").as_bytes());
        let mut s = base32(tag.as_ref());
        s.truncate(26);
        s
    }

    /// The reference line we put in the bodies of our mail: `[ref:1042.k3j9...]`.
    pub fn body_token(&self, ticket: TicketId) -> String {
        format!("[ref:{}.{}]", ticket.0, self.sign("body", &ticket.0.to_string()))
    }

    /// The ticket of the first valid body token in `text` (quoted or not).
    pub fn find_body_token(&self, text: &str) -> Option<TicketId> {
        let mut rest = text;
        while let Some(start) = rest.find("[ref:") {
            let after = &rest[start + 5..];
            if let Some(end) = after.find(']') {
                let inner = &after[..end];
                if let Some((ticket, sig)) = inner.split_once('.')
                    && let Ok(n) = ticket.parse::<u64>()
                    && self.verify("body", ticket, sig)
                {
                    return Some(TicketId(n));
                }
            }
            rest = after;
        }
        None
    }
}

/// Byte-string equality whose time does not depend on where the strings differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lowercase RFC 4648 base32 without padding: safe in local parts and Message-IDs.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// `text` with the signature of every agent-bound token in it (an
/// agent-signed Message-ID `pd.N.nonce.agent.sig@…` or plus-address
/// `support+N.agent.sig@…`) replaced by `redacted`: what leaves through the
/// API and exports, so nobody can pick a token up there and act as an agent.
/// Customer-facing tokens are left alone.
pub fn redact_agent_tokens(text: &str) -> String {
    if !text.contains('@') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(&redact_word(word));
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '<' | '>' | '"' | ',' | ';' | '(' | ')' | '[' | ']') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn redact_word(word: &str) -> String {
    let Some((local, domain)) = word.rsplit_once('@') else {
        return word.to_string();
    };
    // pd.TICKET.NONCE.AGENT.SIG
    if let Some(rest) = local.strip_prefix("pd.") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() == 4 && parts[0].chars().all(|c| c.is_ascii_digit()) {
            return format!("pd.{}.{}.{}.redacted@{domain}", parts[0], parts[1], parts[2]);
        }
    }
    // LOCAL+TICKET.AGENT.SIG
    if let Some((base, tag)) = local.split_once('+') {
        let parts: Vec<&str> = tag.split('.').collect();
        if parts.len() == 3 && parts[0].chars().all(|c| c.is_ascii_digit()) && !parts[0].is_empty() {
            return format!("{base}+{}.{}.redacted@{domain}", parts[0], parts[1]);
        }
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(b"test secret")
    }

    #[test]
    fn agent_tokens_are_redacted_and_no_longer_verify() {
        let s = signer();
        let mid = s.agent_message_id(TicketId(7), "alicejones", "n1", "example.com");
        let plus = s.agent_plus_address("support@example.com", TicketId(7), "alicejones");
        let customer_mid = s.message_id(TicketId(7), "n2", "example.com");
        let customer_plus = s.plus_address("support@example.com", TicketId(7));
        let text = format!("In-Reply-To: <{mid}>, To: {plus}; ours <{customer_mid}> {customer_plus}");
        let red = redact_agent_tokens(&text);
        assert!(red.contains("pd.7.n1.alicejones.redacted@example.com"), "{red}");
        assert!(red.contains("support+7.alicejones.redacted@example.com"), "{red}");
        assert!(red.contains(&customer_mid) && red.contains(&customer_plus), "{red}");
        assert_eq!(s.parse_message_id_full("pd.7.n1.alicejones.redacted@example.com"), None);
        assert_eq!(
            s.parse_plus_address_full("support+7.alicejones.redacted@example.com"),
            None
        );
        assert_eq!(redact_agent_tokens("no tokens here"), "no tokens here");
    }

    #[test]
    fn message_id_round_trip_and_refusals() {
        let s = signer();
        let id = s.message_id(TicketId(1042), "abc123", "example.com");
        assert_eq!(s.parse_message_id(&id), Some(TicketId(1042)));
        assert_eq!(s.parse_message_id(&format!("<{id}>")), Some(TicketId(1042)));
        // Another ticket number with the same signature is refused.
        let forged = id.replacen("1042", "1043", 1);
        assert_eq!(s.parse_message_id(&forged), None);
        // Another secret does not verify.
        assert_eq!(Signer::new(b"other").parse_message_id(&id), None);
        assert_eq!(s.parse_message_id("CAF123@mail.gmail.com"), None);
    }

    #[test]
    fn plus_address_round_trip_and_refusals() {
        let s = signer();
        let a = s.plus_address("support@example.com", TicketId(7));
        assert!(a.starts_with("support+7."), "{a}");
        assert_eq!(s.parse_plus_address(&a), Some(TicketId(7)));
        assert_eq!(s.parse_plus_address(&a.to_uppercase()), Some(TicketId(7)));
        assert_eq!(s.parse_plus_address("support+7.aaaaaaaaaa@example.com"), None);
        assert_eq!(s.parse_plus_address("support@example.com"), None);
    }

    #[test]
    fn agent_tokens_round_trip_and_refusals() {
        let s = signer();
        let id = s.agent_message_id(TicketId(5), "alice", "n9", "example.com");
        assert_eq!(
            s.parse_message_id_full(&id),
            Some((TicketId(5), Some("alice".to_string())))
        );
        assert_eq!(s.parse_message_id(&id), Some(TicketId(5)));
        // Swapping the agent breaks the signature.
        assert_eq!(s.parse_message_id_full(&id.replace(".alice.", ".mallory.")), None);
        let plus = s.agent_plus_address("support@example.com", TicketId(5), "alice");
        assert_eq!(
            s.parse_plus_address_full(&plus),
            Some((TicketId(5), Some("alice".to_string())))
        );
        assert_eq!(s.parse_plus_address_full(&plus.replace(".alice.", ".bob.")), None);
        // The customer-facing forms carry no agent.
        let customer = s.plus_address("support@example.com", TicketId(5));
        assert_eq!(s.parse_plus_address_full(&customer), Some((TicketId(5), None)));
    }

    #[test]
    fn body_token_found_in_quotes() {
        let s = signer();
        let t = s.body_token(TicketId(99));
        let body = format!("Thanks!\n\n> Hello\n> {t}\n");
        assert_eq!(s.find_body_token(&body), Some(TicketId(99)));
        assert_eq!(s.find_body_token("[ref:99.aaaaaaaaaa]"), None);
        assert_eq!(s.find_body_token("[ref:broken"), None);
    }

    #[test]
    fn base32_known_answers() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "my");
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
    }
}
