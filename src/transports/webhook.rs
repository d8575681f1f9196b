//! Webhook deliveries: POSTs the queued deliveries in queue order, in order
//! per webhook and ticket (a delivery waiting for its retry holds back the
//! later ones of its ticket, not other tickets'), with a signature header,
//! retries with doubling backoff across restarts (the queue is in the store),
//! and keeps the ones that failed for good for `postdesk webhooks --failed`.
//!
//! The signature follows Stripe's scheme: `X-Postdesk-Signature:
//! t=UNIX,v1=HEX`, HEX the HMAC-SHA256 with the webhook's secret of
//! `UNIX.BODY`. Receivers recompute it, refuse a timestamp more than a few
//! minutes away (a replay) and may remember `X-Postdesk-Delivery` ids.

use crate::adapters::config::Webhook;
use crate::adapters::store::{Change, HookEntry, Op, StoreError};
use crate::pipeline::Pipeline;
use crate::transports::{Lease, Sink, Unrecorded, blocking};
use jiff::Timestamp;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::watch;

/// The signature header's value for `body` sent at `at` (seconds).
pub fn signature(secret: &[u8], at: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, format!("{at}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={at},v1={hex}")
}

/// The wait before attempt `attempts + 1`: `backoff` doubled per failed attempt, at most an hour.
pub fn retry_after(backoff: Duration, attempts: u32) -> Duration {
    backoff
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(Duration::from_secs(3600))
}

/// Why one attempt failed, or `Ok` for a 2xx answer.
fn attempt(hook: &Webhook, entry: &HookEntry) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(hook.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("postdesk/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut req = agent
        .post(&hook.url)
        .content_type("application/json")
        .header("X-Postdesk-Event", &entry.event)
        .header("X-Postdesk-Delivery", &entry.id);
    if let Some(source) = &hook.secret {
        let secret = source.load().map_err(|e| format!("webhook secret: {e}"))?;
        req = req.header(
            "X-Postdesk-Signature",
            signature(secret.expose().as_bytes(), Timestamp::now().as_second(), &entry.body),
        );
    }
    let response = req.send(entry.body.as_bytes()).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Delivered.
    pub delivered: u32,
    /// Failed this attempt (retried later or failed for good).
    pub failed: u32,
}

/// Most deliveries one pass looks at.
const PASS_LIMIT: usize = 5000;

/// One pass over the queue: every due delivery not held back by an earlier
/// one of its webhook and ticket, attempted once, its outcome committed.
pub fn pass(
    pipeline: &Pipeline,
    writer: &std::sync::Mutex<()>,
    now: Timestamp,
    unrecorded: &Unrecorded,
) -> Result<Pass, StoreError> {
    {
        let _guard = writer.lock().unwrap_or_else(|p| p.into_inner());
        unrecorded.record(&*pipeline.store)?;
    }
    let mut done = Pass::default();
    let mut held: HashSet<(String, u64)> = HashSet::new();
    let mut after = None;
    let mut seen = 0;
    // No delivery tells of an event a crash or a failed write could still undo.
    let mut durable = false;
    loop {
        let page = pipeline.store.hooks(after, 500)?;
        let last = page.len() < 500;
        for (seq, mut entry) in page {
            after = Some(seq);
            seen += 1;
            if entry.failed {
                continue;
            }
            let key = (entry.hook.clone(), entry.ticket.0);
            if held.contains(&key) {
                continue;
            }
            if entry.next_attempt > now {
                held.insert(key);
                continue;
            }
            // A store that can record nothing more would deliver this again and again.
            if pipeline.store.failed().is_some() {
                return Ok(done);
            }
            if !durable {
                pipeline.store.flush()?;
                durable = true;
            }
            let outcome = match pipeline.config.webhooks.iter().find(|h| h.name == entry.hook) {
                Some(hook) => attempt(hook, &entry).map_err(|e| (e, hook.attempts, hook.backoff)),
                None => Err((
                    format!("no [[webhook]] named {:?} in the config now", entry.hook),
                    0,
                    Duration::ZERO,
                )),
            };
            let mut w = Change::default();
            let delivered = outcome.is_ok().then(|| entry.id.clone());
            match outcome {
                Ok(()) => {
                    done.delivered += 1;
                    w.push(Op::HookDone(seq));
                }
                Err((error, most, backoff)) => {
                    done.failed += 1;
                    entry.attempts += 1;
                    entry.last_error = Some(error.clone());
                    if entry.attempts >= most {
                        entry.failed = true;
                        tracing::warn!(hook = %entry.hook, event = %entry.event, ticket = entry.ticket.0, attempts = entry.attempts, error = %error, "webhook delivery failed for good; kept for `postdesk webhooks --failed`");
                    } else {
                        let wait = retry_after(backoff, entry.attempts);
                        entry.next_attempt = now
                            .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
                            .unwrap_or(now);
                        tracing::info!(hook = %entry.hook, event = %entry.event, ticket = entry.ticket.0, attempts = entry.attempts, error = %error, retry_in_s = wait.as_secs(), "webhook delivery failed; retrying");
                        held.insert(key);
                    }
                    w.push(Op::HookUpdate(seq, Box::new(entry)));
                }
            }
            let _guard = writer.lock().unwrap_or_else(|p| p.into_inner());
            unrecorded
                .commit(&*pipeline.store, w, delivered.is_some())
                .inspect_err(|e| {
                    if let Some(id) = &delivered {
                        tracing::error!(delivery = %id, error = %e, "webhook delivered, but the store refused its record: it is recorded before anything more is delivered");
                    }
                })?;
        }
        if last || seen >= PASS_LIMIT {
            return Ok(done);
        }
    }
}

/// Every queued delivery (failed ones too), in queue order, page by page.
fn each_hook(pipeline: &Pipeline, mut f: impl FnMut(u64, HookEntry)) -> Result<(), StoreError> {
    let mut after = None;
    loop {
        let page = pipeline.store.hooks(after, 1000)?;
        let last = page.len() < 1000;
        for (seq, e) in page {
            after = Some(seq);
            f(seq, e);
        }
        if last {
            return Ok(());
        }
    }
}

/// Marks failed deliveries to be sent again: all of them, or the one with `id`.
/// Returns how many.
pub fn retry_failed(pipeline: &Pipeline, id: Option<&str>, now: Timestamp) -> Result<u32, StoreError> {
    let mut n = 0;
    let mut w = Change::default();
    each_hook(pipeline, |seq, mut e| {
        if e.failed && id.is_none_or(|id| id == e.id) {
            e.failed = false;
            e.attempts = 0;
            e.next_attempt = now;
            w.push(Op::HookUpdate(seq, Box::new(e)));
            n += 1;
        }
    })?;
    pipeline.store.commit(w)?;
    Ok(n)
}

/// The deliveries that failed for good, in queue order.
pub fn failed(pipeline: &Pipeline) -> Result<Vec<HookEntry>, StoreError> {
    let mut out = Vec::new();
    each_hook(pipeline, |_, e| {
        if e.failed {
            out.push(e);
        }
    })?;
    Ok(out)
}

/// The daemon's webhook task: a pass every second while webhooks are
/// configured, under the `webhooks` lease when instances share a store.
pub async fn run(sink: Sink, mut stop: watch::Receiver<bool>) {
    let mut lease = Lease::new("webhooks");
    let unrecorded = Unrecorded::default();
    loop {
        let pipeline = sink.pipeline();
        if !pipeline.config.webhooks.is_empty() && lease.held(&sink) {
            let writer = sink.writer.clone();
            match blocking(|| pass(&pipeline, &writer, Timestamp::now(), &unrecorded)) {
                Ok(p) if p.delivered + p.failed > 0 => {
                    tracing::debug!(delivered = p.delivered, failed = p.failed, "webhook pass")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "webhook pass failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            lease.release(&sink);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripe_s_scheme() {
        // HMAC-SHA256("key", "1.{}") computed independently:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"key",b"1.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"key", 1, "{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }

    #[test]
    fn retries_back_off_by_doubling_to_an_hour() {
        let b = Duration::from_secs(30);
        assert_eq!(retry_after(b, 1), Duration::from_secs(30));
        assert_eq!(retry_after(b, 2), Duration::from_secs(60));
        assert_eq!(retry_after(b, 4), Duration::from_secs(240));
        assert_eq!(retry_after(b, 30), Duration::from_secs(3600));
    }
}
