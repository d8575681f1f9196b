//! Live counters for `/metrics`: plain atomics the pipeline, sender, timers
//! and sources bump, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the processing latency histogram.
pub const LATENCY_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// Counters since the process started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Mails read by sources or ingest.
    pub mails_read: AtomicU64,
    /// Mails stored on tickets (new or appended).
    pub mails_stored: AtomicU64,
    /// Duplicates skipped.
    pub duplicates: AtomicU64,
    /// Mails quarantined.
    pub quarantined: AtomicU64,
    /// Mails sent.
    pub sent: AtomicU64,
    /// Mails failed for good.
    pub failed: AtomicU64,
    /// SLA warnings fired.
    pub sla_warnings: AtomicU64,
    /// SLA breaches fired.
    pub sla_breaches: AtomicU64,
    /// Deliveries the outgoing server refused for reasons of its own
    /// (authentication, connection, server-wide errors): retried, never dropped.
    pub outgoing_errors: AtomicU64,
    /// The outgoing server's last server-wide refusal, while it lasts (cleared by a delivery).
    outgoing_down: Mutex<Option<String>>,
    /// HTTP connections refused because every slot was taken.
    pub http_refused: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    mailboxes: Mutex<BTreeMap<String, MailboxState>>,
}

/// What `/metrics` and `/readyz` know of one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxState {
    /// Logged in (IMAP) or watching (Maildir) now.
    pub up: bool,
    /// Unix time of the last successful fetch.
    pub last_fetch: Option<i64>,
    /// Another instance holds this mailbox's lease; this one stands by.
    pub standby: bool,
}

impl MailboxState {
    /// Working or standing by as it should: counts as ready.
    pub fn ready(&self) -> bool {
        self.up || self.standby
    }
}

impl Metrics {
    /// Records one processing time.
    pub fn observe_latency(&self, seconds: f64) {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Sets a mailbox's connection state.
    pub fn mailbox_up(&self, name: &str, up: bool) {
        let mut m = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(name.to_string()).or_default();
        e.up = up;
        if up {
            e.standby = false;
        }
    }

    /// Records that another instance holds the mailbox (`true`) or that this one took it.
    pub fn mailbox_standby(&self, name: &str, standby: bool) {
        let mut m = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(name.to_string()).or_default();
        e.standby = standby;
        if standby {
            e.up = false;
        }
    }

    /// Records a successful fetch of a mailbox at unix time `at`.
    pub fn mailbox_fetched(&self, name: &str, at: i64) {
        let mut m = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(name.to_string()).or_default();
        e.up = true;
        e.last_fetch = Some(at);
    }

    /// Records that the outgoing server refuses us (`Some(why)`) or works again (`None`).
    pub fn set_outgoing_down(&self, why: Option<String>) {
        *self.outgoing_down.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Why the outgoing server refuses us now, if it does.
    pub fn outgoing_down(&self) -> Option<String> {
        self.outgoing_down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The state of every mailbox seen so far.
    pub fn mailboxes(&self) -> BTreeMap<String, MailboxState> {
        self.mailboxes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Renders the counters, plus gauges the caller computed, as Prometheus text.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "postdesk_mails_read_total",
            "Mails read from sources.",
            &self.mails_read,
        );
        counter(
            &mut out,
            "postdesk_mails_ingested_total",
            "Mails stored on tickets.",
            &self.mails_stored,
        );
        counter(
            &mut out,
            "postdesk_mails_duplicate_total",
            "Duplicate mails skipped.",
            &self.duplicates,
        );
        counter(
            &mut out,
            "postdesk_mails_quarantined_total",
            "Mails quarantined.",
            &self.quarantined,
        );
        counter(&mut out, "postdesk_mails_sent_total", "Mails sent.", &self.sent);
        counter(
            &mut out,
            "postdesk_mails_failed_total",
            "Mails that failed for good.",
            &self.failed,
        );
        counter(
            &mut out,
            "postdesk_sla_warnings_total",
            "SLA warnings fired.",
            &self.sla_warnings,
        );
        counter(
            &mut out,
            "postdesk_sla_breaches_total",
            "SLA breaches fired.",
            &self.sla_breaches,
        );
        counter(
            &mut out,
            "postdesk_outgoing_errors_total",
            "Deliveries refused by the outgoing server for its own reasons (authentication, connection); retried.",
            &self.outgoing_errors,
        );
        counter(
            &mut out,
            "postdesk_http_connections_refused_total",
            "HTTP connections refused because every connection slot was taken.",
            &self.http_refused,
        );
        let _ = writeln!(
            out,
            "# HELP postdesk_outgoing_up Whether the outgoing server takes our mail (0 while it refuses us).\n# TYPE postdesk_outgoing_up gauge\npostdesk_outgoing_up {}",
            u8::from(self.outgoing_down().is_none())
        );
        let _ = writeln!(
            out,
            "# HELP postdesk_tickets Tickets by status and queue.\n# TYPE postdesk_tickets gauge"
        );
        for ((status, queue), n) in &gauges.tickets {
            let _ = writeln!(
                out,
                "postdesk_tickets{{status=\"{}\",queue=\"{}\"}} {n}",
                escape(status),
                escape(queue)
            );
        }
        let _ = writeln!(
            out,
            "# HELP postdesk_outbox_depth Mails waiting to be sent.\n# TYPE postdesk_outbox_depth gauge\npostdesk_outbox_depth {}",
            gauges.outbox_depth
        );
        let _ = writeln!(
            out,
            "# HELP postdesk_outbox_oldest_age_seconds Age of the oldest mail waiting.\n# TYPE postdesk_outbox_oldest_age_seconds gauge\npostdesk_outbox_oldest_age_seconds {}",
            gauges.outbox_oldest_age
        );
        let _ = writeln!(
            out,
            "# HELP postdesk_store_bytes The store's files on disk (sled: its index and the blob packs).\n# TYPE postdesk_store_bytes gauge"
        );
        for (part, n) in &gauges.store_bytes {
            let _ = writeln!(out, "postdesk_store_bytes{{part=\"{}\"}} {n}", escape(part));
        }
        if let Some(n) = gauges.store_compacted_bytes {
            let _ = writeln!(
                out,
                "# HELP postdesk_store_compacted_bytes The index's size right after its last compaction: at twice this the daemon's next start compacts it.\n# TYPE postdesk_store_compacted_bytes gauge\npostdesk_store_compacted_bytes {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP postdesk_mailbox_up Whether a mailbox is connected.\n# TYPE postdesk_mailbox_up gauge"
        );
        let boxes = self.mailboxes();
        for (name, s) in &boxes {
            let _ = writeln!(
                out,
                "postdesk_mailbox_up{{mailbox=\"{}\"}} {}",
                escape(name),
                u8::from(s.up)
            );
        }
        let _ = writeln!(
            out,
            "# HELP postdesk_mailbox_last_fetch_timestamp_seconds Last successful fetch.\n# TYPE postdesk_mailbox_last_fetch_timestamp_seconds gauge"
        );
        for (name, s) in &boxes {
            if let Some(t) = s.last_fetch {
                let _ = writeln!(
                    out,
                    "postdesk_mailbox_last_fetch_timestamp_seconds{{mailbox=\"{}\"}} {t}",
                    escape(name)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP postdesk_processing_seconds Time to process one mail.\n# TYPE postdesk_processing_seconds histogram"
        );
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "postdesk_processing_seconds_bucket{{le=\"{bound}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "postdesk_processing_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "postdesk_processing_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "postdesk_processing_seconds_count {count}");
        out
    }
}

/// Values computed from the store at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    /// Ticket counts by (status, queue).
    pub tickets: BTreeMap<(String, String), u64>,
    /// Outbox entries.
    pub outbox_depth: u64,
    /// Seconds since the oldest outbox entry was queued.
    pub outbox_oldest_age: i64,
    /// The store's bytes on disk by part.
    pub store_bytes: Vec<(&'static str, u64)>,
    /// The index's bytes right after its last compaction.
    pub store_compacted_bytes: Option<u64>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
