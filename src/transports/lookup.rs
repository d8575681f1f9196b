//! `[integrations.customer_lookup]`: asks a CRM about a new ticket's
//! requester. The answer's configured fields go on the ticket (shown to
//! agents, matched by rules as `customer.FIELD`). A lookup waits at most
//! `timeout`; a failure or a timeout lets the ticket go on without the
//! record, and for a minute after one no lookup is tried, so a CRM that is
//! down costs mail one timeout, not one per mail. Answers (an empty one
//! too) are kept `cache` long, per address, in this process.

use crate::adapters::config::CustomerLookup;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lookups are not tried for this long after one failed.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// Most addresses kept.
const MAX_CACHED: usize = 10_000;

struct State {
    answers: HashMap<String, (Instant, BTreeMap<String, String>)>,
    paused_until: Option<Instant>,
}

static STATE: std::sync::LazyLock<Mutex<State>> = std::sync::LazyLock::new(|| {
    Mutex::new(State {
        answers: HashMap::new(),
        paused_until: None,
    })
});

/// The requester's record: the configured fields of the CRM's answer, or
/// empty when it has none, failed, took too long, or is paused after a failure.
pub fn customer(config: &CustomerLookup, email: &str) -> BTreeMap<String, String> {
    let email = email.to_ascii_lowercase();
    {
        let state = STATE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, record)) = state.answers.get(&email)
            && at.elapsed() < config.cache
        {
            return record.clone();
        }
        if state.paused_until.is_some_and(|u| Instant::now() < u) {
            return BTreeMap::new();
        }
    }
    let answer = ask(config, &email);
    let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
    match answer {
        Ok(record) => {
            if state.answers.len() >= MAX_CACHED {
                let cache = config.cache;
                state.answers.retain(|_, (at, _)| at.elapsed() < cache);
                if state.answers.len() >= MAX_CACHED {
                    state.answers.clear();
                }
            }
            state.answers.insert(email, (Instant::now(), record.clone()));
            record
        }
        Err(e) => {
            tracing::warn!(error = %e, pause_s = PAUSE_AFTER_FAILURE.as_secs(), "customer lookup failed; tickets go on without it");
            state.paused_until = Some(Instant::now() + PAUSE_AFTER_FAILURE);
            BTreeMap::new()
        }
    }
}

/// One request: the record (empty for a 404), or why it failed.
fn ask(config: &CustomerLookup, email: &str) -> Result<BTreeMap<String, String>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(config.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let url = config.url.replace("{email}", &crate::transports::percent_encode(email));
    let mut req = agent.get(&url).header("Accept", "application/json");
    if let Some(source) = &config.token {
        let token = source.load()?;
        let value = if config.header.eq_ignore_ascii_case("authorization") {
            format!("Bearer {}", token.expose())
        } else {
            token.expose().to_string()
        };
        req = req.header(config.header.as_str(), value);
    }
    let mut response = req.call().map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        404 => return Ok(BTreeMap::new()),
        200..=299 => {}
        s => return Err(format!("HTTP {s}")),
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    // An object, or a list whose first entry is the contact.
    let v = match v {
        serde_json::Value::Array(a) => a.into_iter().next().unwrap_or_default(),
        v => v,
    };
    Ok(fields(&v, &config.fields))
}

/// The configured fields (dotted paths) of an answer, as short one-line texts.
pub fn fields(v: &serde_json::Value, wanted: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for f in wanted {
        let value = f.split('.').try_fold(v, |at, key| at.get(key));
        let text = match value {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            _ => continue,
        };
        let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        if !text.trim().is_empty() {
            out.insert(f.clone(), text.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_taken_by_dotted_path_as_one_line_texts() {
        let v = serde_json::json!({"name": "Bob\nBig", "plan": "enterprise", "seats": 40, "company": {"name": "Acme"}, "tags": ["x"]});
        let got = fields(
            &v,
            &[
                "name".into(),
                "plan".into(),
                "seats".into(),
                "company.name".into(),
                "tags".into(),
                "missing".into(),
            ],
        );
        let want: BTreeMap<String, String> = [
            ("company.name", "Acme"),
            ("name", "BobBig"),
            ("plan", "enterprise"),
            ("seats", "40"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }
}
