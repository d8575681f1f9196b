//! One mail through parse → classify → thread → apply → store, in one
//! transaction. The caller flushes the store before the source marks mail
//! processed. One bad mail is quarantined; it never stops the mailbox.

use crate::adapters::config::Config;
use crate::adapters::inbound;
use crate::adapters::store::{
    Change, IdEntry, Lane, Op, OutboxEntry, Position, QuarantineEntry, Store, StoreError, Timer,
};
use crate::core::classify::{Classification, Sender, classify};
use crate::core::model::InboundMessage;
use crate::core::model::{Direction, Event, MessageKind, MessageRecord, TicketId};
use crate::core::thread::{Decision, Outcome, ThreadContext, thread};
use crate::core::ticket::{ApplyContext, apply_bounce, apply_inbound};
use crate::core::token::Signer;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

pub mod hooks;
mod merge;

/// Where a mail came from.
#[derive(Clone, Debug)]
pub struct Origin {
    /// Mailbox name.
    pub mailbox: String,
    /// Unique key within sources (`imap:NAME:UIDVALIDITY:UID`, `file:...`), if any.
    pub source_key: Option<String>,
    /// IMAP position to record with this mail.
    pub position: Option<Position>,
    /// A backfill (`ingest` of files), not mail arriving now: what it queues
    /// waits in the bulk lane of the outbox.
    pub bulk: bool,
    /// Backfilled mail dated before `[automation] backfill_window` (see
    /// [`Origin::backfill`]): history. It is recorded, threaded and routed,
    /// but assigned to nobody, told to nobody (mail, webhooks), no SLA
    /// clock starts, and a ticket it opens is closed.
    pub history: bool,
    /// Written on the web (the portal's form or status page), not mailed:
    /// channel `web`, and never an agent's, whatever address it names.
    pub web: bool,
    /// The channel of mail that was not mailed (`web` when unset): `phone`,
    /// `chat` or `api` for tickets opened through the API.
    pub channel: Option<String>,
}

impl Origin {
    /// Mail arriving now in `mailbox`, with no source position.
    pub fn live(mailbox: &str) -> Origin {
        Origin {
            mailbox: mailbox.to_string(),
            source_key: None,
            position: None,
            bulk: false,
            history: false,
            web: false,
            channel: None,
        }
    }

    /// Mail found in `mailbox`, delivered there at `delivered` (the IMAP
    /// server's INTERNALDATE while postdesk takes the mailbox over, `None`
    /// once it has read it; the arrival of a mail `explain` reads): history, arriving when it
    /// was delivered, when that is older than `window`; else live, arriving
    /// `now`. Returns the origin and the arrival time.
    pub fn delivered(
        mailbox: &str,
        delivered: Option<Timestamp>,
        now: Timestamp,
        window: std::time::Duration,
    ) -> (Origin, Timestamp) {
        match delivered
            .filter(|d| *d < now)
            .map(|d| (Origin::backfill(mailbox, d, now, window), d))
        {
            Some((origin, d)) if origin.history => (origin, d),
            _ => (Origin::live(mailbox), now),
        }
    }

    /// Backfilled mail in `mailbox` that arrived at `at` (its `Date`), read
    /// at `now`: bulk, and history when older than `window`.
    pub fn backfill(mailbox: &str, at: Timestamp, now: Timestamp, window: std::time::Duration) -> Origin {
        Origin {
            bulk: true,
            history: now.as_second().saturating_sub(at.as_second())
                > i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
            ..Origin::live(mailbox)
        }
    }
}

/// What happened to one mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Processed {
    /// A new ticket was opened.
    NewTicket {
        /// The ticket.
        ticket: TicketId,
        /// Whether the mail was automatic.
        auto: bool,
    },
    /// Appended to an existing ticket.
    Appended {
        /// The ticket.
        ticket: TicketId,
        /// Whether the mail was automatic.
        auto: bool,
    },
    /// Seen before (same source position, Message-ID or content hash).
    Duplicate,
    /// A delivery status notification, matched to a ticket when possible.
    Bounce {
        /// The ticket it reports on.
        ticket: Option<TicketId>,
    },
    /// Our own mail: dropped.
    Dropped {
        /// Why.
        reason: String,
    },
    /// Kept raw with the reason.
    Quarantined {
        /// Why.
        reason: String,
    },
}

/// Counts over a run of mails; the `ingest --json` summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Mails read.
    pub read: u64,
    /// New tickets opened.
    pub new_tickets: u64,
    /// Mails appended to existing tickets.
    pub appended: u64,
    /// Duplicates skipped.
    pub duplicates: u64,
    /// Automatic mails (stored, never answered).
    pub auto: u64,
    /// Bounces.
    pub bounces: u64,
    /// Quarantined mails.
    pub quarantined: u64,
    /// Our own mails, dropped.
    pub dropped: u64,
    /// Backfilled mails older than `[automation] backfill_window`, taken in
    /// as history (told to nobody, no SLA clock); duplicates not counted.
    pub history: u64,
}

impl Summary {
    /// Counts one result.
    pub fn add(&mut self, p: &Processed) {
        self.read += 1;
        match p {
            Processed::NewTicket { auto, .. } => {
                self.new_tickets += 1;
                self.auto += u64::from(*auto);
            }
            Processed::Appended { auto, .. } => {
                self.appended += 1;
                self.auto += u64::from(*auto);
            }
            Processed::Duplicate => self.duplicates += 1,
            Processed::Bounce { .. } => self.bounces += 1,
            Processed::Dropped { .. } => self.dropped += 1,
            Processed::Quarantined { .. } => self.quarantined += 1,
        }
    }

    /// Counts one result of a mail from `origin`.
    pub fn add_from(&mut self, p: &Processed, origin: &Origin) {
        self.add(p);
        self.history += u64::from(origin.history && !matches!(p, Processed::Duplicate));
    }
}

/// What one `tick` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TickSummary {
    /// Timers fired.
    pub fired: u64,
    /// Timers found stale (the ticket moved on) and dropped.
    pub stale: u64,
}

/// How a mail would be handled, for `explain`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Explanation {
    /// Parse result or error.
    pub parsed: Result<String, String>,
    /// Classification.
    pub classification: Option<String>,
    /// Whether an acknowledgement would be allowed by the classification.
    pub may_auto_reply: Option<bool>,
    /// Duplicate of a stored mail.
    pub duplicate: Option<String>,
    /// For mail from an agent's address: the proof, or why it would count as customer mail.
    pub agent_check: Option<String>,
    /// The ids it refers to (In-Reply-To, then References newest first).
    pub references: Vec<String>,
    /// Threading rule and reason, or what happens instead (dropped, bounce).
    pub threading: Option<String>,
    /// Every routing rule, whether it matched, and where it failed (for a new ticket).
    pub rules: Vec<crate::core::route::RuleTrace>,
    /// The text's language (ISO 639-1), when it can be told.
    pub language: Option<String>,
    /// The text's sentiment with its strongest cues.
    pub sentiment: Option<crate::core::sentiment::Sentiment>,
    /// The three likeliest intents with their confidences (with a trained model).
    #[serde(default)]
    pub intents: Vec<(String, f64)>,
    /// The CRM's record of the requester (`[integrations.customer_lookup]`), for a mail that would open a ticket.
    #[serde(default)]
    pub customer: std::collections::BTreeMap<String, String>,
    /// The knowledge base's best articles with their scores, and whether
    /// each reaches `min_score` (is suggested), for a mail that would open a ticket.
    #[serde(default)]
    pub articles: Vec<ExplainedArticle>,
    /// Why the mail would be history (arriving longer ago than
    /// `backfill_window`: told to nobody, no SLA clock, a ticket it opens
    /// closed); `None` for mail handled as arriving.
    #[serde(default)]
    pub history: Option<String>,
}

/// An article as `explain` shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ExplainedArticle {
    /// Its slug.
    pub slug: String,
    /// Its title.
    pub title: String,
    /// Its BM25 score for the mail.
    pub score: f32,
    /// Whether it reaches `[knowledge] min_score`, so the acknowledgement lists it.
    pub suggested: bool,
}

/// What the store knows of a mail's identity.
enum Seen {
    /// Not stored yet.
    New,
    /// Stored already: why it counts as the same mail.
    Duplicate(String),
    /// Its Message-ID is stored for another mail, on this ticket.
    Conflict(TicketId),
}

/// The pipeline: configuration, store and signer.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// Configuration in force.
    pub config: Arc<Config>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Token signer.
    pub signer: Signer,
    /// Live counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The intent model (`postdesk train`), when there is one.
    pub intent: Option<Arc<crate::core::intent::Model>>,
    /// The knowledge base's articles and index (`[knowledge]`), when configured.
    pub knowledge: Option<Arc<crate::adapters::knowledge::Knowledge>>,
}

/// A ticket as a training example: its first customer mail (subject and
/// text, as [`intent_text`] reads mail) and its label (`type` or `queue`).
pub fn intent_example(v: &crate::view::TicketView, label: &str) -> Option<(String, String)> {
    let l = match label {
        "queue" => Some(v.ticket.queue.clone()),
        _ => v.ticket.kind.clone(),
    }
    .filter(|l| !l.is_empty())?;
    let first = v
        .messages
        .iter()
        .find(|m| m.direction == Direction::Inbound && m.kind == MessageKind::Customer && m.merged_from.is_none())?;
    let msg = InboundMessage {
        subject: first.subject.clone(),
        text: first.text.clone(),
        ..Default::default()
    };
    Some((intent_text(&msg), l))
}

/// Trains the intent model on `examples` and writes it to `data_dir`
/// (atomically); `None` with fewer than two labels.
pub fn train_intent(
    config: &Config,
    examples: &[(String, String)],
    source: &str,
    now: Timestamp,
) -> Result<Option<(crate::core::intent::Model, crate::adapters::intent::Header)>, String> {
    let data_dir = &config.instance.data_dir;
    let pairs: Vec<(&str, &str)> = examples.iter().map(|(t, l)| (t.as_str(), l.as_str())).collect();
    let (embeddings, about) = match &config.intent.embeddings {
        Some((weights, vocabulary)) => {
            let e = crate::adapters::intent::load_embeddings(weights, vocabulary)?;
            let about = crate::adapters::intent::EmbeddingsHeader::of(&e, weights);
            (Some(Arc::new(e)), Some(about))
        }
        None => (None, None),
    };
    let Some(model) = crate::core::intent::train_with(&pairs, Default::default(), embeddings) else {
        return Ok(None);
    };
    let header = crate::adapters::intent::Header {
        labels: model.labels.clone(),
        buckets: model.buckets.len(),
        examples: model.examples,
        source: source.to_string(),
        trained_at: now.to_string(),
        embeddings: about,
    };
    let path = crate::adapters::intent::path(data_dir);
    std::fs::create_dir_all(data_dir)
        .and_then(|_| crate::adapters::intent::save(&model, &header, &path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some((model, header)))
}

impl Pipeline {
    /// The daemon's retraining (`[intent] retrain`): the tickets' labelled
    /// first mails, a new model when there are `min_examples` of two labels
    /// or more, written to `data_dir`. `Ok(None)`: too few to learn from.
    pub fn retrain_intent(&self, now: Timestamp) -> Result<Option<crate::core::intent::Model>, String> {
        let label = &self.config.intent.label;
        let mut examples = Vec::new();
        crate::view::each_ticket(&*self.store, |v| -> Result<(), StoreError> {
            examples.extend(intent_example(&v, label));
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        if examples.len() < self.config.intent.min_examples {
            tracing::info!(
                examples = examples.len(),
                min_examples = self.config.intent.min_examples,
                "intent model not retrained: too few labelled tickets"
            );
            return Ok(None);
        }
        let trained = train_intent(&self.config, &examples, &format!("tickets:{label}"), now)?;
        Ok(trained.map(|(m, _)| m))
    }
}

/// The `[knowledge]` articles, read and indexed; an unreadable folder is an error.
pub fn load_knowledge(config: &Config) -> Result<Option<Arc<crate::adapters::knowledge::Knowledge>>, String> {
    let Some(k) = &config.knowledge else {
        return Ok(None);
    };
    let kb = crate::adapters::knowledge::Knowledge::load(&k.path)?;
    tracing::info!(articles = kb.len(), path = %k.path.display(), "knowledge base indexed");
    Ok(Some(Arc::new(kb)))
}

/// The intent model in `data_dir`, if one was trained; a damaged file is
/// logged and left alone (tickets then go without an intent).
pub fn load_intent(data_dir: &std::path::Path) -> Option<Arc<crate::core::intent::Model>> {
    let path = crate::adapters::intent::path(data_dir);
    if !path.exists() {
        return None;
    }
    match crate::adapters::intent::load(&path) {
        Ok((model, header)) => {
            tracing::info!(
                labels = header.labels.len(),
                examples = header.examples,
                source = %header.source,
                embeddings = header.embeddings.as_ref().map(|e| e.source.as_str()),
                "intent model loaded"
            );
            Some(Arc::new(model))
        }
        Err(e) => {
            tracing::warn!(error = %e, "intent model not loaded");
            None
        }
    }
}

impl Pipeline {
    /// Commits `w` with the webhook deliveries its events call for.
    pub fn commit(&self, mut w: Change) -> Result<(), StoreError> {
        if !self.config.webhooks.is_empty() {
            let hooks = hooks::ops(&self.config, &*self.store, &w)?;
            w.ops.extend(hooks);
        }
        self.store.commit(w)
    }

    /// Processes one raw mail arriving at `now`, committing its effects in one transaction.
    pub fn process(&self, raw: &[u8], origin: &Origin, now: Timestamp) -> Result<Processed, StoreError> {
        let mut out = self.process_batch(&[(raw, origin, now)])?;
        Ok(out.pop().expect("one result per mail"))
    }

    /// Processes a batch of mails in order, all in one transaction (group
    /// commit). The raw mails go to the blob store first, made durable
    /// together (one sync for the batch), so every record committed after
    /// names a durable blob.
    /// The caller flushes the store once for the batch before the source
    /// marks the mails processed.
    pub fn process_batch(&self, mails: &[(&[u8], &Origin, Timestamp)]) -> Result<Vec<Processed>, StoreError> {
        self.process_batch_ahead(mails, None)
    }

    /// Stores the mails' blobs (durable on return) and parses them and reads
    /// their text (language, sentiment) on every core, ahead of
    /// [`Pipeline::process_batch_ahead`]: what a backfill does for its next
    /// batch while this one goes into the store.
    pub fn prepare(&self, raws: &[&[u8]]) -> Result<ReadAheads, StoreError> {
        // Storing waits on the disk, reading on the processor: both at once.
        let (keys, reads) = std::thread::scope(|scope| {
            let stored = scope.spawn(|| self.store.put_blobs(raws));
            let reads = read_ahead(raws, &self.config);
            (stored.join(), reads)
        });
        let keys = keys.map_err(|_| StoreError::Corrupt {
            tree: "blobs",
            message: "storing the blobs panicked".into(),
        })??;
        Ok(ReadAheads { keys, reads })
    }

    /// [`Pipeline::process_batch`] of mails [`Pipeline::prepare`]d (the same
    /// mails in the same order; else they are prepared here).
    pub fn process_batch_ahead(
        &self,
        mails: &[(&[u8], &Origin, Timestamp)],
        ahead: Option<ReadAheads>,
    ) -> Result<Vec<Processed>, StoreError> {
        let ahead = ahead.filter(|a| a.keys.len() == mails.len() && a.reads.len() == mails.len());
        // A batch is read through a cache (for a remote store, even a batch of
        // one): its source keys in one query, each mail's Message-IDs in one.
        if (self.store.remote() || mails.len() > 1) && !mails.is_empty() {
            let keys: Vec<String> = mails.iter().filter_map(|(_, o, _)| o.source_key.clone()).collect();
            // Group commit: the batch's changes go in as one transaction at
            // its end. Another instance's write first keeps nothing of it:
            // the batch is processed again, a commit per mail.
            use crate::adapters::store::cache::BatchCache;
            let cache = Arc::new(BatchCache::deferred(self.store.clone(), &keys)?);
            let cached = Pipeline {
                store: cache.clone(),
                ..self.clone()
            };
            let out = cached.process_batch_direct(mails, ahead)?;
            return match cache.finish() {
                Ok(()) => Ok(out),
                Err(StoreError::Conflict(why)) => {
                    tracing::info!(reason = %why, mails = mails.len(), "conflict with another instance; processing the batch again mail by mail");
                    let cache = Arc::new(BatchCache::new(self.store.clone(), &keys)?);
                    Pipeline {
                        store: cache,
                        ..self.clone()
                    }
                    .process_batch_direct(mails, None)
                }
                Err(e) => Err(e),
            };
        }
        self.process_batch_direct(mails, ahead)
    }

    fn process_batch_direct(
        &self,
        mails: &[(&[u8], &Origin, Timestamp)],
        ahead: Option<ReadAheads>,
    ) -> Result<Vec<Processed>, StoreError> {
        let mut fresh: Vec<&[u8]> = Vec::with_capacity(mails.len());
        let mut known = Vec::with_capacity(mails.len());
        for (raw, origin, _) in mails {
            let seen = match &origin.source_key {
                Some(key) => self.store.has_source(key)?,
                None => false,
            };
            if !seen {
                fresh.push(raw);
            }
            known.push(seen);
        }
        // The blob keys (SHA-256) are the mails' keys: hashed once, when the
        // blobs are stored. Parsing and reading the text depend on the bytes
        // alone: done for the whole batch on every core, before the mails go
        // in order. One of each per fresh mail: prepared here, or taken from
        // the caller's preparation of every mail.
        let prepared: Vec<(String, Option<ReadAhead>)> = match ahead {
            Some(a) => a
                .keys
                .into_iter()
                .zip(a.reads)
                .zip(&known)
                .filter(|(_, seen)| !**seen)
                .map(|(p, _)| p)
                .collect(),
            None => {
                let a = self.prepare(&fresh)?;
                a.keys.into_iter().zip(a.reads).collect()
            }
        };
        let mut prepared = prepared.into_iter();
        let mut out = Vec::with_capacity(mails.len());
        for ((raw, origin, now), seen) in mails.iter().zip(known) {
            out.push(if seen {
                self.count(&Processed::Duplicate, std::time::Instant::now());
                Processed::Duplicate
            } else {
                let (key, mut ahead) = prepared.next().expect("one key per fresh mail");
                // Another instance sharing the store got there first: nothing
                // of this attempt was kept, so process the mail again.
                let mut attempt = 1;
                loop {
                    match self.process_stored(raw, &key, origin, *now, ahead.take()) {
                        Err(StoreError::Conflict(why)) if attempt < 5 => {
                            tracing::info!(mailbox = %origin.mailbox, attempt, reason = %why, "conflict with another instance; processing the mail again");
                            attempt += 1;
                        }
                        r => break r?,
                    }
                }
            });
        }
        Ok(out)
    }

    /// One mail whose blob is stored under `raw_key`.
    fn process_stored(
        &self,
        raw: &[u8],
        raw_key: &str,
        origin: &Origin,
        now: Timestamp,
        ahead: Option<ReadAhead>,
    ) -> Result<Processed, StoreError> {
        let started = std::time::Instant::now();
        // One mail must never take the mailbox down: a bug that panics on it
        // quarantines the mail (nothing of it was committed) and the loop goes on.
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.process_inner(raw, raw_key, origin, now, ahead)
        })) {
            Ok(r) => r?,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown panic");
                let reason = format!("internal error while processing: {what}");
                tracing::error!(mailbox = %origin.mailbox, reason = %reason, "mail quarantined after an internal error");
                let mut w = Change::default();
                mark_source(&mut w, origin, raw_key);
                self.quarantine(&mut w, raw, raw_key, origin, &reason, now);
                self.commit(w)?;
                Processed::Quarantined { reason }
            }
        };
        self.count(&result, started);
        Ok(result)
    }

    fn count(&self, result: &Processed, started: std::time::Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.metrics;
        m.mails_read.fetch_add(1, Relaxed);
        match result {
            Processed::NewTicket { .. } | Processed::Appended { .. } | Processed::Bounce { ticket: Some(_) } => {
                m.mails_stored.fetch_add(1, Relaxed);
            }
            Processed::Duplicate => {
                m.duplicates.fetch_add(1, Relaxed);
            }
            Processed::Quarantined { .. } | Processed::Bounce { ticket: None } => {
                m.quarantined.fetch_add(1, Relaxed);
            }
            Processed::Dropped { .. } => {}
        }
        m.observe_latency(started.elapsed().as_secs_f64());
    }

    /// A mail over `[limits] max_message_bytes`, of which the source read only
    /// the header section (`head`): quarantined with its real size, the head
    /// kept, the whole mail left where it came from (`whereabouts`).
    pub fn process_oversized(
        &self,
        head: &[u8],
        size: u64,
        whereabouts: &str,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<Processed, StoreError> {
        if let Some(key) = &origin.source_key
            && self.store.has_source(key)?
        {
            return Ok(Processed::Duplicate);
        }
        let raw_key = self.store.put_blobs(&[head])?.remove(0);
        let mut w = Change::default();
        mark_source(&mut w, origin, &raw_key);
        let reason = format!(
            "mail is {size} bytes, over the limit of {}: only its header section is kept here; the whole mail stays at {whereabouts}",
            self.config.limits.max_message_bytes
        );
        self.quarantine(&mut w, head, &raw_key, origin, &reason, now);
        self.commit(w)?;
        self.metrics
            .mails_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .quarantined
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(mailbox = %origin.mailbox, size, "oversized mail quarantined");
        Ok(Processed::Quarantined { reason })
    }

    fn process_inner(
        &self,
        raw: &[u8],
        raw_key: &str,
        origin: &Origin,
        now: Timestamp,
        ahead: Option<ReadAhead>,
    ) -> Result<Processed, StoreError> {
        let mut w = Change::default();
        mark_source(&mut w, origin, raw_key);

        let (parsed, reading) = match ahead {
            Some(a) => (a.parsed, Some(a.reading)),
            None => (inbound::parse(raw, &self.config.limits), None),
        };
        let mut msg = match parsed {
            Ok(m) => {
                // A failpoint for the tests of the panic guard above; not in release builds.
                #[cfg(debug_assertions)]
                if let Ok(word) = std::env::var("POSTDESK_FAILPOINT_PANIC_ON_SUBJECT")
                    && m.subject.contains(&word)
                {
                    panic!("failpoint: subject contains {word:?}");
                }
                m
            }
            Err(e) => {
                let reason = e.to_string();
                self.quarantine(&mut w, raw, raw_key, origin, &reason, now);
                self.commit(w)?;
                tracing::warn!(mailbox = %origin.mailbox, reason = %reason, "mail quarantined");
                return Ok(Processed::Quarantined { reason });
            }
        };
        let mut ids: Vec<&str> = msg.referenced_ids();
        ids.extend(msg.message_id.as_deref());
        self.store.prefetch_message_ids(&ids)?;
        let seen = self.seen(&msg)?;
        if let Seen::Duplicate(_) = seen {
            self.commit(w)?;
            return Ok(Processed::Duplicate);
        }
        let class = classify(&msg, &self.config, &self.signer);
        read_text(&mut msg, &class, reading, &self.config.languages);
        if let Sender::Own(why) = &class.sender {
            // Dropped, but kept: raw, in the quarantine list with the reason.
            let reason = format!("dropped: our own mail ({why})");
            self.quarantine(&mut w, raw, raw_key, origin, &reason, now);
            self.commit(w)?;
            tracing::info!(mailbox = %origin.mailbox, reason = %why, "own mail dropped");
            return Ok(Processed::Dropped { reason: why.clone() });
        }
        if class.bounce {
            return self.bounce(w, raw, raw_key, &msg, origin, now);
        }
        let (class, mut decision, agent_proof, forged_agent) = self.sender_and_decision(&msg, class, now, origin);
        if let Some((agent, why)) = &forged_agent {
            tracing::warn!(agent = %agent, reason = %why, "mail from an agent address without proof");
        }
        // A rating for a survey of a ticket that closed meanwhile still belongs to it.
        if let Outcome::NewLinked(t) = decision.outcome
            && let Some(old) = self.store.ticket(t)?
            && old.survey_sent
            && old.csat.is_none()
            && crate::core::sla::rating(&msg.text).is_some()
            && msg.from.as_ref().is_some_and(|f| old.is_participant(&f.email))
        {
            decision.outcome = Outcome::Existing(t);
            decision.reason.push_str("; a rating for its survey");
        }
        // A customer's mail that opens a ticket is read for its intent.
        if !matches!(decision.outcome, Outcome::Existing(_)) && matches!(class.sender, Sender::Customer) {
            msg.intent = self.read_intent(&msg, &class);
            // And its requester looked up in the CRM, when one is configured.
            if let (Some(lookup), Some(from)) = (&self.config.customer_lookup, &msg.from) {
                msg.customer = crate::transports::lookup::customer(lookup, &from.email);
            }
            msg.articles = self
                .articles(&msg, &origin.mailbox)
                .into_iter()
                .filter(|(_, pass)| *pass)
                .map(|(s, _)| crate::core::model::Suggested {
                    slug: s.slug,
                    title: s.title,
                })
                .collect();
        }
        let existing = match decision.outcome {
            Outcome::Existing(id) | Outcome::NewLinked(id) => self.store.ticket(id)?,
            Outcome::New => None,
        };
        let new_id = self.store.next_ticket_id()?;
        let from = msg.from.as_ref().map(|m| m.email.clone()).unwrap_or_default();
        // Rate limits count real time, never the mail's Date (which anyone can backdate).
        let wall = Timestamp::now();
        let hour_ago = Timestamp::from_second(wall.as_second() - 3600).unwrap_or(wall);
        let mut agent_mail_last_hour = std::collections::HashMap::new();
        for agent in &self.config.agents {
            for purpose in ["notification", "security_warning"] {
                let key = format!("{purpose}:{}", agent.emails[0]);
                let n = self.store.acks_since(&key, hour_ago)?;
                agent_mail_last_hour.insert(key, n);
            }
        }
        let cx = ApplyContext {
            config: &self.config,
            signer: &self.signer,
            now,
            mailbox: &origin.mailbox,
            acks_last_hour: self.store.acks_since(&from, hour_ago)?,
            sender_suppressed: self.store.suppressed(&from, now)?,
            nonce: format!("{:x}", self.store.next_seq()?),
            loads: match decision.outcome {
                // Only assignment of a new ticket reads the loads; history is not assigned.
                Outcome::Existing(_) => Default::default(),
                _ if origin.history => Default::default(),
                _ => self.store.loads()?,
            },
            last_round_robin: None,
            forged_agent,
            latest_update: None,
            sender_proof: crate::core::agent::customer_proof(
                &msg,
                &self.signer,
                &self.config,
                decision.ticket(),
                existing.as_ref().map(|t| t.merged.as_slice()).unwrap_or_default(),
            ),
            agent_mail_last_hour,
            history: Vec::new(),
            archived: origin.history,
        };
        let before = existing.clone();
        // The conversation so far: for `status` requests and the agents'
        // summaries of mail a person writes now (a backfill goes without).
        let status_request = crate::core::sla::is_status_request(&msg.text);
        let history = match &existing {
            Some(t) if status_request || (!origin.bulk && class.auto.is_none() && !class.bounce) => {
                self.store.messages(t.id)?
            }
            _ => Vec::new(),
        };
        let latest_update = if status_request {
            history
                .iter()
                .rev()
                .find(|m| m.direction == Direction::Outbound && m.kind == MessageKind::Agent)
                .map(|m| m.text.clone())
        } else {
            None
        };
        let cx = ApplyContext {
            latest_update,
            history: crate::core::summary::turns(&history),
            ..cx
        };
        let self_served = match (&agent_proof, decision.outcome, &existing) {
            (None, Outcome::Existing(_), Some(t)) => crate::core::ticket::self_service(t, &msg, &class, raw_key, &cx),
            _ => None,
        };
        let served_self = self_served.is_some();
        let mut applied = match (&agent_proof, decision.outcome, existing) {
            _ if self_served.is_some() => self_served.expect("checked"),
            (Some((agent, proof)), Outcome::Existing(_), Some(ticket)) => {
                crate::core::ticket::apply_agent_reply(ticket, &msg, agent, proof, raw_key, &cx)
            }
            (_, _, existing) => {
                let queue = self
                    .config
                    .address(&origin.mailbox)
                    .map(|m| m.queue.clone())
                    .unwrap_or_else(|| "general".into());
                let cx = ApplyContext {
                    last_round_robin: self.store.round_robin(&queue)?,
                    ..cx.clone()
                };
                apply_inbound(existing, new_id, &msg, &class, &decision, raw_key, &cx)
            }
        };
        let before = if applied.created { None } else { before };
        if origin.web {
            let channel = origin.channel.clone().unwrap_or_else(|| "web".into());
            applied.message.channel = Some(channel.clone());
            if applied.created {
                applied.ticket.channel = channel;
            }
        }
        let served = applied
            .events
            .iter()
            .any(|e| e.kind == "csat" || e.kind == "status_request" || e.kind == "deflected");
        let customer_wrote = applied.message.kind == MessageKind::Customer && !served;
        let agent_replied = applied.mails.iter().any(|m| m.purpose == "relay");
        // History starts no SLA clock: its deadlines passed long ago.
        if !origin.history {
            let sla_events =
                crate::core::sla::refresh(&mut applied.ticket, &self.config, now, customer_wrote, agent_replied);
            applied.events.extend(sla_events);
        }
        let id = applied.ticket.id;
        let conflict = match seen {
            Seen::Conflict(first) => Some(first),
            _ => None,
        };
        if let Some(first) = conflict {
            applied.events.push(Event::new(
                now,
                "message_id_conflict",
                "system",
                &[
                    ("message_id", json!(msg.message_id)),
                    ("first_ticket", json!(first.0)),
                    (
                        "reason",
                        json!("another mail with this Message-ID but different content is stored"),
                    ),
                ],
            ));
        }
        // Merges: the ones this mail's headers prove, or an agent's commands.
        let others = match &agent_proof {
            Some((agent, _)) if !applied.merges.is_empty() => {
                let requests = std::mem::take(&mut applied.merges);
                self.agent_merges(
                    &requests,
                    &mut applied.ticket,
                    &mut applied.events,
                    &mut applied.mails,
                    agent,
                    msg.message_id.as_deref(),
                    &cx,
                )?
            }
            None if !served_self && !matches!(decision.outcome, Outcome::NewLinked(_)) => self.merge_by_headers(
                &msg,
                &mut applied.ticket,
                before.as_ref(),
                &mut applied.events,
                &mut applied.mails,
                customer_wrote,
                &cx,
            )?,
            _ => Vec::new(),
        };
        for o in &others {
            self.update_due(&mut w, Some(&o.before), &o.after);
            w.ticket(&o.after);
            for e in &o.events {
                w.event(o.after.id, e);
            }
        }
        if origin.history {
            hush(
                &mut applied.ticket,
                &mut applied.events,
                &mut applied.mails,
                applied.created,
                &self.config,
                now,
            );
        }
        if applied.created {
            w.push(Op::NextTicket(TicketId(new_id.0 + 1)));
        }
        if let Some((queue, agent)) = &applied.round_robin {
            w.push(Op::RoundRobin(queue.clone(), agent.clone()));
        }
        self.update_due(&mut w, before.as_ref(), &applied.ticket);
        self.index_message(&mut w, &msg, id, conflict.is_some())?;
        w.ticket(&applied.ticket);
        w.message(id, &applied.message);
        for e in &applied.events {
            w.event(id, e);
        }
        let lane = if origin.bulk { Lane::Bulk } else { Lane::Live };
        for mail in &applied.mails {
            self.queue_mail(&mut w, mail, now, lane);
        }
        if origin.history {
            // Nor do webhooks hear of history: an archive's import would post every old ticket.
            self.store.commit(w)?;
        } else {
            self.commit(w)?;
        }
        tracing::info!(
            ticket = id.0,
            mailbox = %origin.mailbox,
            rule = decision.rule,
            created = applied.created,
            history = origin.history,
            "mail stored"
        );
        let auto = class.auto.is_some();
        Ok(if applied.created {
            Processed::NewTicket { ticket: id, auto }
        } else {
            Processed::Appended { ticket: id, auto }
        })
    }

    /// Keeps the timer index in step with a ticket that changed from `before` to `after`.
    fn update_due(
        &self,
        w: &mut Change,
        before: Option<&crate::core::model::Ticket>,
        after: &crate::core::model::Ticket,
    ) {
        let old = before
            .map(|b| crate::core::sla::due_items(b, &self.config))
            .unwrap_or_default();
        let new = crate::core::sla::due_items(after, &self.config);
        let timer = |at: Timestamp, kind: crate::core::sla::TimerKind| Timer {
            at,
            ticket: after.id,
            kind: kind as u8,
        };
        for (at, kind) in &old {
            if !new.contains(&(*at, *kind)) {
                w.push(Op::RemoveTimer(timer(*at, *kind)));
            }
        }
        for (at, kind) in &new {
            if !old.contains(&(*at, *kind)) {
                w.push(Op::AddTimer(timer(*at, *kind)));
            }
        }
    }

    /// Fires every timer due at `now`. Timers are read from the due index in
    /// batches, grouped by ticket, and each batch is one transaction: the cost
    /// is the number of due timers, whatever the number of tickets.
    pub fn tick(&self, now: Timestamp) -> Result<TickSummary, StoreError> {
        let mut summary = TickSummary::default();
        loop {
            let due = self.store.due_until(now, 500)?;
            if due.is_empty() {
                break;
            }
            let mut w = Change::default();
            let mut by_ticket: Vec<(crate::core::model::TicketId, Vec<(Timestamp, u8)>)> = Vec::new();
            for timer in due {
                let Timer { at, ticket: id, kind } = timer;
                // Every entry read is consumed: fired, or dropped as stale.
                w.push(Op::RemoveTimer(timer));
                match by_ticket.iter_mut().find(|(t, _)| *t == id) {
                    Some((_, items)) => items.push((at, kind)),
                    None => by_ticket.push((id, vec![(at, kind)])),
                }
            }
            for (id, items) in by_ticket {
                let Some(before) = self.store.ticket(id)? else {
                    summary.stale += items.len() as u64;
                    continue;
                };
                let mut ticket = before.clone();
                let mut events = Vec::new();
                let mut mails = Vec::new();
                let mut recent: Option<Vec<MessageRecord>> = None;
                for (at, kind_byte) in items {
                    let Some(kind) = crate::core::sla::TimerKind::from_u8(kind_byte) else {
                        summary.stale += 1;
                        continue;
                    };
                    // A timer the ticket no longer implies (answered, paused, closed) is stale.
                    if !crate::core::sla::due_items(&ticket, &self.config).contains(&(at, kind)) {
                        summary.stale += 1;
                        continue;
                    }
                    let nonce = format!("{:x}t", self.store.next_seq()?);
                    let cx = crate::core::agent::MailContext {
                        config: &self.config,
                        signer: &self.signer,
                        now,
                        nonce: &nonce,
                    };
                    let recent = match &recent {
                        Some(r) => r,
                        None => recent.insert(self.store.messages(id)?),
                    };
                    let fired = crate::core::sla::fire(&mut ticket, kind, at, recent, &cx);
                    {
                        use crate::core::sla::TimerKind::*;
                        use std::sync::atomic::Ordering::Relaxed;
                        match kind {
                            FirstResponseWarn | NextResponseWarn | ResolutionWarn => {
                                self.metrics.sla_warnings.fetch_add(1, Relaxed);
                            }
                            FirstResponseBreach | NextResponseBreach | ResolutionBreach => {
                                self.metrics.sla_breaches.fetch_add(1, Relaxed);
                            }
                            _ => {}
                        }
                    }
                    events.extend(fired.events);
                    mails.extend(fired.mails);
                    events.extend(crate::core::sla::refresh(&mut ticket, &self.config, now, false, false));
                    summary.fired += 1;
                    tracing::info!(ticket = id.0, ?kind, "timer fired");
                }
                if ticket == before {
                    continue;
                }
                ticket.updated_at = now;
                for e in &events {
                    w.event(id, e);
                }
                for m in &mails {
                    self.queue_mail(&mut w, m, now, Lane::Bulk);
                }
                // The consumed entries are removed above; the rest follow the new state.
                let after_items = crate::core::sla::due_items(&ticket, &self.config);
                let timer = |at, k: crate::core::sla::TimerKind| Timer {
                    at,
                    ticket: id,
                    kind: k as u8,
                };
                for (t, k) in crate::core::sla::due_items(&before, &self.config) {
                    if !after_items.contains(&(t, k)) {
                        w.push(Op::RemoveTimer(timer(t, k)));
                    }
                }
                for (t, k) in after_items {
                    w.push(Op::AddTimer(timer(t, k)));
                }
                w.ticket(&ticket);
            }
            self.commit(w)?;
        }
        self.store.flush()?;
        Ok(summary)
    }

    /// Queues an outgoing mail in `lane`: outbox entry, Message-ID index and an outbound message record.
    pub fn queue_mail(&self, w: &mut Change, mail: &crate::core::outgoing::OutgoingMail, now: Timestamp, lane: Lane) {
        w.push(Op::Enqueue(
            lane,
            Box::new(OutboxEntry {
                mail: mail.clone(),
                attempts: 0,
                next_attempt: now,
                last_error: None,
            }),
        ));
        w.push(Op::MessageId(
            mail.message_id.clone(),
            IdEntry {
                ticket: mail.ticket,
                stored: true,
                hash: None,
            },
        ));
        // Real time, not `now` (a backdated mail or `tick --now` must not dodge the limits).
        let wall = Timestamp::now();
        if mail.auto_submitted {
            for r in &mail.to {
                w.push(Op::Ack(r.email.clone(), wall));
            }
        }
        for r in &mail.to {
            if self.config.agent_by_email(&r.email).is_some() {
                w.push(Op::Ack(format!("{}:{}", mail.purpose, r.email), wall));
            }
        }
        let kind = match mail.purpose.as_str() {
            "relay" => MessageKind::Agent,
            "note" => MessageKind::Note,
            _ => MessageKind::System,
        };
        let record = MessageRecord {
            message_id: mail.message_id.clone(),
            from: mail.from.clone(),
            to: mail.to.clone(),
            date: now,
            direction: Direction::Outbound,
            kind,
            subject: mail.subject.clone(),
            text: mail.body.clone(),
            raw_key: None,
            auto_reason: None,
            attachments: mail.attachments.iter().map(|a| a.name.clone()).collect(),
            flagged: None,
            language: None,
            sentiment: None,
            channel: None,
            merged_from: None,
        };
        w.message(mail.ticket, &record);
    }

    /// Who really sent the mail and where it goes. An agent's address alone
    /// proves nothing: the mail threads as the agent's, then must carry a token
    /// signed for that agent and that very ticket (or a trusted DKIM/DMARC
    /// pass); otherwise it is a customer's, flagged, and threads as one.
    #[allow(clippy::type_complexity)]
    fn sender_and_decision(
        &self,
        msg: &InboundMessage,
        mut class: Classification,
        now: Timestamp,
        origin: &Origin,
    ) -> (
        Classification,
        Decision,
        Option<(crate::adapters::config::Agent, String)>,
        Option<(String, String)>,
    ) {
        let Sender::Agent(name) = &class.sender else {
            let decision = self.decide(msg, &class, now, origin.history);
            return (class, decision, None, None);
        };
        let agent = self
            .config
            .agent_by_name_or_email(name)
            .cloned()
            .expect("classified agents exist");
        if origin.web {
            // A web form proves no address: an agent's there is a customer's, and the agent is told.
            class.sender = Sender::Customer;
            let decision = self.decide(msg, &class, now, origin.history);
            let why = "written on the web portal, which proves no address".to_string();
            return (class, decision, None, Some((agent.name.clone(), why)));
        }
        let as_agent = self.decide(msg, &class, now, origin.history);
        // Tokens of the tickets merged into it prove the agent too.
        let merged = as_agent
            .ticket()
            .and_then(|t| self.store.ticket(t).ok().flatten())
            .map(|t| t.merged)
            .unwrap_or_default();
        match crate::core::agent::authenticate(msg, &agent, &self.signer, &self.config, as_agent.ticket(), &merged) {
            Ok(proof) => (class, as_agent, Some((agent, proof)), None),
            Err(why) => {
                class.sender = Sender::Customer;
                let decision = self.decide(msg, &class, now, origin.history);
                (class, decision, None, Some((agent.name.clone(), why)))
            }
        }
    }

    fn decide(&self, msg: &InboundMessage, class: &Classification, now: Timestamp, history: bool) -> Decision {
        let cx = ThreadContext {
            archived: history,
            signer: &self.signer,
            subject_tag: &self.config.desk.subject_tag,
            now,
            reopen_window: self.config.automation.reopen_window,
            from_agent: matches!(class.sender, Sender::Agent(_)),
        };
        thread(msg, &crate::adapters::store::Index(&*self.store), &cx)
    }

    /// Whether the mail was seen. A duplicate is the same Message-ID and the
    /// same message (From, Date, Subject, body: the content hash), or the same
    /// content without a Message-ID. Transport headers may differ (one mail
    /// reaching two of our mailboxes). A different mail reusing a stored
    /// Message-ID is no duplicate but a conflict with the ticket of the first.
    fn seen(&self, msg: &InboundMessage) -> Result<Seen, StoreError> {
        let Some(id) = &msg.message_id else {
            return Ok(match self.store.has_hash(&msg.content_hash)? {
                true => Seen::Duplicate("the same content (no Message-ID) is stored".into()),
                false => Seen::New,
            });
        };
        Ok(match self.store.message_id(id)? {
            Some(e) if e.stored => match &e.hash {
                Some(h) if *h != msg.content_hash => match self.store.has_hash(&msg.content_hash)? {
                    true => Seen::Duplicate(format!("Message-ID <{id}> with the same content is stored")),
                    false => Seen::Conflict(e.ticket),
                },
                _ => Seen::Duplicate(format!("Message-ID <{id}> is stored on ticket {}", e.ticket)),
            },
            _ => Seen::New,
        })
    }

    /// Indexes a stored mail; `conflict`: its Message-ID belongs to another mail.
    fn index_message(
        &self,
        w: &mut Change,
        msg: &InboundMessage,
        id: TicketId,
        conflict: bool,
    ) -> Result<(), StoreError> {
        match &msg.message_id {
            // A reused Message-ID keeps pointing at the first mail; this one is known by its content.
            Some(_) if conflict => w.push(Op::Hash(msg.content_hash.clone())),
            Some(mid) => w.push(Op::MessageId(
                mid.clone(),
                IdEntry {
                    ticket: id,
                    stored: true,
                    hash: Some(msg.content_hash.clone()),
                },
            )),
            None => w.push(Op::Hash(msg.content_hash.clone())),
        }
        // Referenced ids too, so replies to a parent we never saw land together.
        for r in msg.referenced_ids() {
            if self.store.message_id(r)?.is_none() {
                w.push(Op::MessageId(
                    r.to_string(),
                    IdEntry {
                        ticket: id,
                        stored: false,
                        hash: None,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Keeps a mail (its blob stored) in the quarantine list.
    fn quarantine(&self, w: &mut Change, raw: &[u8], raw_key: &str, origin: &Origin, reason: &str, now: Timestamp) {
        w.push(Op::Quarantine(Box::new(QuarantineEntry {
            at: now,
            mailbox: origin.mailbox.clone(),
            source: origin.source_key.clone(),
            reason: reason.to_string(),
            raw_key: raw_key.to_string(),
            size: raw.len(),
        })));
    }

    /// The stored ticket of the mail a DSN reports on: our signed Message-ID, else the index.
    fn bounced_ticket(&self, msg: &InboundMessage) -> Result<Option<crate::core::model::Ticket>, StoreError> {
        let Some(id) = msg
            .delivery_report
            .as_ref()
            .and_then(|r| r.original_message_id.as_deref())
        else {
            return Ok(None);
        };
        let ticket = match self.signer.parse_message_id(id) {
            Some(t) => Some(t),
            None => self.store.message_id(id)?.map(|e| e.ticket),
        };
        // A ticket merged since: the bounce belongs to the one it lives in.
        ticket
            .map(|t| crate::adapters::store::resolve(&*self.store, t))
            .transpose()
            .map(Option::flatten)
    }

    fn bounce(
        &self,
        mut w: Change,
        raw: &[u8],
        raw_key: &str,
        msg: &InboundMessage,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<Processed, StoreError> {
        let report = msg.delivery_report.clone().unwrap_or_default();
        let ticket = self.bounced_ticket(msg)?;
        let Some(ticket) = ticket else {
            self.quarantine(
                &mut w,
                raw,
                raw_key,
                origin,
                "bounce that matches no ticket (its original Message-ID is unknown)",
                now,
            );
            self.commit(w)?;
            return Ok(Processed::Bounce { ticket: None });
        };
        let applied = apply_bounce(ticket, msg, raw_key, now);
        let id = applied.ticket.id;
        if let Some(mid) = &msg.message_id {
            w.push(Op::MessageId(
                mid.clone(),
                IdEntry {
                    ticket: id,
                    stored: true,
                    hash: Some(msg.content_hash.clone()),
                },
            ));
        } else {
            w.push(Op::Hash(msg.content_hash.clone()));
        }
        w.ticket(&applied.ticket);
        w.message(id, &applied.message);
        for e in &applied.events {
            w.event(id, e);
        }
        // Hard bounces suppress automatic mail to that address for a week, but
        // only for an address we mailed: the report must name our signed
        // Message-ID, and the address must be among that mail's recipients.
        // Anyone can send a DSN naming anyone.
        let ours = report
            .original_message_id
            .as_deref()
            .filter(|mid| self.signer.parse_message_id(mid) == Some(id));
        let mailed: Vec<String> = match ours {
            Some(mid) => self
                .store
                .messages(applied.ticket.id)?
                .into_iter()
                .filter(|m| m.direction == Direction::Outbound && m.message_id == mid)
                .flat_map(|m| m.to.into_iter().map(|r| r.email.to_ascii_lowercase()))
                .collect(),
            None => Vec::new(),
        };
        for (rcpt, action, status) in &report.recipients {
            if !(action == "failed" || status.starts_with('5')) {
                continue;
            }
            if mailed.contains(&rcpt.to_ascii_lowercase()) {
                let until = Timestamp::from_second(now.as_second() + 7 * 86_400).unwrap_or(now);
                w.push(Op::Suppress(rcpt.clone(), until));
            } else {
                w.event(
                    id,
                    &Event::new(
                        now,
                        "bounce_ignored",
                        "system",
                        &[
                            ("recipient", json!(rcpt)),
                            (
                                "reason",
                                json!("the report names no mail of ours to this address: nothing suppressed"),
                            ),
                        ],
                    ),
                );
            }
        }
        self.commit(w)?;
        tracing::info!(ticket = id.0, "bounce recorded");
        Ok(Processed::Bounce { ticket: Some(id) })
    }

    /// How a mail would be handled, without storing anything.
    pub fn explain(&self, raw: &[u8], mailbox: &str, now: Timestamp) -> Result<Explanation, StoreError> {
        let mut msg = match inbound::parse(raw, &self.config.limits) {
            Ok(m) => m,
            Err(e) => {
                return Ok(Explanation {
                    parsed: Err(format!("would be quarantined: {e}")),
                    classification: None,
                    may_auto_reply: None,
                    duplicate: None,
                    agent_check: None,
                    references: Vec::new(),
                    threading: None,
                    rules: Vec::new(),
                    language: None,
                    sentiment: None,
                    intents: Vec::new(),
                    customer: Default::default(),
                    articles: Vec::new(),
                    history: None,
                });
            }
        };
        let class = classify(&msg, &self.config, &self.signer);
        read_text(&mut msg, &class, None, &self.config.languages);
        let agent_name = match &class.sender {
            Sender::Agent(name) => Some(name.clone()),
            _ => None,
        };
        // Read as a backfill arriving at `now` would be: history when older than the window.
        let window = self.config.automation.backfill_window;
        let (origin, _) = Origin::delivered(mailbox, Some(now), Timestamp::now(), window);
        let (_, decision, agent_proof, forged) = self.sender_and_decision(&msg, class.clone(), now, &origin);
        // Read as the mail would be, so the rules below see its intent.
        let intents: Vec<(String, f64)> = match &self.intent {
            Some(m) if class.auto.is_none() && !class.bounce => {
                m.rank(&intent_text(&msg)).into_iter().take(3).collect()
            }
            _ => Vec::new(),
        };
        let mut articles = Vec::new();
        if matches!(class.sender, Sender::Customer) && !matches!(decision.outcome, Outcome::Existing(_)) {
            msg.intent = self.read_intent(&msg, &class);
            // The CRM's record too, so the rules below see `customer.FIELD` as they would.
            if let (Some(lookup), Some(from)) = (&self.config.customer_lookup, &msg.from) {
                msg.customer = crate::transports::lookup::customer(lookup, &from.email);
            }
            articles = self
                .articles(&msg, mailbox)
                .into_iter()
                .map(|(s, suggested)| ExplainedArticle {
                    slug: s.slug,
                    title: s.title,
                    score: s.score,
                    suggested,
                })
                .collect();
        }
        let agent_check = agent_name.map(|_| match (&agent_proof, &forged) {
            (Some((_, proof)), _) => format!("verified: {proof}"),
            (_, Some((_, why))) => format!("unproven, would be stored as flagged customer mail: {why}"),
            _ => "unknown".into(),
        });
        let threading = if let Sender::Own(why) = &class.sender {
            format!("dropped: our own mail ({why})")
        } else if class.bounce {
            let report = msg.delivery_report.clone().unwrap_or_default();
            let ticket = self.bounced_ticket(&msg)?.map(|t| t.id);
            let rcpts: Vec<String> = report
                .recipients
                .iter()
                .map(|(r, a, s)| format!("{r} {a} {s}"))
                .collect();
            match ticket {
                Some(t) => format!("bounce recorded on ticket {t} ({})", rcpts.join(", ")),
                None => format!(
                    "bounce of {} matches no stored ticket: kept in quarantine ({})",
                    report
                        .original_message_id
                        .as_deref()
                        .map(|m| format!("<{m}>"))
                        .unwrap_or_else(|| "an unknown mail".into()),
                    rcpts.join(", ")
                ),
            }
        } else {
            match decision.outcome {
                Outcome::Existing(id) => {
                    format!("rule {}: appended to ticket {id}: {}", decision.rule, decision.reason)
                }
                Outcome::New => format!("rule {}: new ticket: {}", decision.rule, decision.reason),
                Outcome::NewLinked(id) => {
                    format!("rule {}: new ticket linked to {id}: {}", decision.rule, decision.reason)
                }
            }
        };
        Ok(Explanation {
            parsed: Ok(format!(
                "From {}, subject {:?}, Message-ID {}",
                msg.from.as_ref().map(|m| m.email.as_str()).unwrap_or("(none)"),
                msg.subject,
                msg.message_id
                    .as_deref()
                    .map(|m| format!("<{m}>"))
                    .unwrap_or_else(|| "(none)".into())
            )),
            classification: Some(class.describe()),
            may_auto_reply: Some(class.may_auto_reply()),
            duplicate: match self.seen(&msg)? {
                Seen::Duplicate(why) => Some(why),
                _ => None,
            },
            agent_check,
            references: msg.referenced_ids().into_iter().map(String::from).collect(),
            threading: Some(threading),
            rules: crate::core::route::route(&msg, mailbox, &self.config.rules).trace,
            language: msg.language.clone(),
            sentiment: Some(crate::core::sentiment::score(&msg.text)),
            intents,
            customer: msg.customer.clone(),
            articles,
            history: origin.history.then(|| {
                format!(
                    "arrived {now}, longer ago than backfill_window ({:#}): nobody would be told, no SLA clock would start, a ticket it opens would be closed",
                    jiff::SignedDuration::try_from(window).unwrap_or_default()
                )
            }),
        })
    }

    /// `PATCH /api/tickets/{id}`: the emailed commands (`#status`,
    /// `#priority`, `#assign`, `#queue`, `#type`, `#tag`, `#untag`) run for
    /// `actor` (an API token's name, the events' actor) through the same
    /// code as an agent's reply. All or nothing: any refused command
    /// refuses the whole change, with the reasons. A new assignee is told,
    /// as after an emailed `#assign`.
    pub fn api_update(
        &self,
        id: TicketId,
        commands: &[crate::core::reply::Command],
        actor: &str,
        now: Timestamp,
    ) -> Result<Result<crate::core::model::Ticket, Vec<String>>, StoreError> {
        let Some(mut ticket) = crate::adapters::store::resolve(&*self.store, id)? else {
            return Ok(Err(vec![format!("there is no ticket {id}")]));
        };
        let before = ticket.clone();
        let who = crate::core::settings::Agent {
            name: actor.to_string(),
            emails: Vec::new(),
            queues: Vec::new(),
            max_open: None,
        };
        let (mut events, errors) = crate::core::agent::apply_commands(&mut ticket, commands, &who, &self.config, now);
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        if events.is_empty() {
            return Ok(Ok(ticket));
        }
        ticket.updated_at = now;
        events.extend(crate::core::sla::refresh(&mut ticket, &self.config, now, false, false));
        let mut w = Change::default();
        // The agent it was assigned to hears of it, as after an emailed `#assign`.
        let nonce = format!("{:x}a", self.store.next_seq()?);
        let cx = crate::core::agent::MailContext {
            config: &self.config,
            signer: &self.signer,
            now,
            nonce: &nonce,
        };
        if let Some((notice, event)) = crate::core::ticket::assignment_notice(
            &ticket,
            before.assignee.as_deref(),
            actor,
            &self.config,
            &crate::core::summary::turns(&self.store.messages(ticket.id)?),
            &cx,
        ) {
            events.push(event);
            self.queue_mail(&mut w, &notice, now, Lane::Live);
        }
        self.update_due(&mut w, Some(&before), &ticket);
        w.ticket(&ticket);
        for e in &events {
            w.event(ticket.id, e);
        }
        self.commit(w)?;
        self.store.flush()?;
        Ok(Ok(ticket))
    }

    /// The knowledge base's best articles for a customer's first mail, in
    /// the queue the rules would give it, each with whether it scores
    /// `min_score`.
    fn articles(&self, msg: &InboundMessage, mailbox: &str) -> Vec<(crate::adapters::knowledge::Suggestion, bool)> {
        let (Some(kb), Some(k)) = (&self.knowledge, &self.config.knowledge) else {
            return Vec::new();
        };
        let queue = crate::core::route::route(msg, mailbox, &self.config.rules)
            .actions
            .queue
            .or_else(|| self.config.address(mailbox).map(|a| a.queue.clone()))
            .unwrap_or_else(|| "general".into());
        let text: String = crate::core::reply::strip_quotes(&msg.text).chars().take(4000).collect();
        let asked = format!("{}\n{text}", crate::core::subject::normalize(&msg.subject));
        kb.rank(&asked, &queue, k.suggestions)
            .into_iter()
            .map(|s| {
                let pass = s.score >= k.min_score;
                (s, pass)
            })
            .collect()
    }

    /// Records a mailbox position (UIDVALIDITY change, empty batches).
    pub fn set_position(&self, mailbox: &str, position: Position) -> Result<(), StoreError> {
        let mut w = Change::default();
        w.push(Op::Position(mailbox.to_string(), position));
        self.commit(w)
    }
}

/// Language and sentiment, for mail a person wrote (automatic mail and
/// bounces are not read: it costs 0.1 ms a mail and tells nothing).
impl Pipeline {
    /// The intent of a mail a person wrote (subject and text), by the model
    /// in force; `None` without one or for automatic mail.
    fn read_intent(&self, msg: &InboundMessage, class: &Classification) -> Option<crate::core::intent::Intent> {
        let model = self.intent.as_ref()?;
        if class.auto.is_some() || class.bounce {
            return None;
        }
        model.predict(&intent_text(msg))
    }
}

/// What the intent model reads of a mail: its subject (without `Re:` and
/// tags) and the first 4,000 characters of its text.
pub fn intent_text(msg: &InboundMessage) -> String {
    let text: String = msg.text.chars().take(4000).collect();
    format!("{}\n{text}", crate::core::subject::normalize(&msg.subject))
}

fn read_text(
    msg: &mut InboundMessage,
    class: &crate::core::classify::Classification,
    reading: Option<(Option<String>, crate::core::sentiment::Score)>,
    languages: &crate::core::language::Languages,
) {
    if class.auto.is_none() && !class.bounce {
        (msg.language, msg.sentiment) = reading.unwrap_or_else(|| reading_of(&msg.text, languages));
    }
}

/// History (backfilled mail older than `[automation] backfill_window`) is
/// told to nobody: drops the mails its processing queued and the events that
/// announce them (`notified`, and those naming a dropped mail's Message-ID),
/// and records what was not sent in one `history` event (also on a ticket it
/// opens, so that the ticket says why it has no SLA clock). A ticket history
/// opens is closed at once, at the mail's time: an archive's conversations
/// are nobody's work now, and stay out of the new and open lists (a reply
/// from now on opens a new ticket linked to it; the archive's own later mail
/// is added to it, [`crate::core::thread::ThreadContext::archived`]).
fn hush(
    ticket: &mut crate::core::model::Ticket,
    events: &mut Vec<Event>,
    mails: &mut Vec<crate::core::outgoing::OutgoingMail>,
    created: bool,
    config: &Config,
    now: Timestamp,
) {
    if mails.is_empty() && !created {
        return;
    }
    let dropped = std::mem::take(mails);
    let ids: Vec<&str> = dropped.iter().map(|m| m.message_id.as_str()).collect();
    events.retain(|e| {
        e.kind != "notified"
            && !e
                .detail
                .get("message_id")
                .and_then(|v| v.as_str())
                .is_some_and(|id| ids.contains(&id))
    });
    let mut purposes: Vec<&str> = Vec::new();
    for m in &dropped {
        if !purposes.contains(&m.purpose.as_str()) {
            purposes.push(&m.purpose);
        }
    }
    events.push(Event::new(
        now,
        "history",
        "system",
        &[
            (
                "reason",
                json!(format!(
                    "backfilled mail older than backfill_window ({:#}): nobody was told, no SLA clock started",
                    jiff::SignedDuration::try_from(config.automation.backfill_window).unwrap_or_default()
                )),
            ),
            ("not_sent", json!(purposes)),
        ],
    ));
    if created && ticket.status != crate::core::model::Status::Closed {
        let from = ticket.status;
        ticket.status = crate::core::model::Status::Closed;
        ticket.closed_at = Some(now);
        events.push(Event::new(
            now,
            "status",
            "system",
            &[
                ("from", json!(from.as_str())),
                ("to", json!("closed")),
                (
                    "reason",
                    json!("history: a conversation from before backfill_window is imported closed"),
                ),
                ("history", json!(true)),
            ],
        ));
    }
}

/// The language (among the desk's) and sentiment of a mail's text.
fn reading_of(
    text: &str,
    languages: &crate::core::language::Languages,
) -> (Option<String>, crate::core::sentiment::Score) {
    (
        languages.detect(text),
        crate::core::sentiment::Score::of(crate::core::sentiment::score(text).score),
    )
}

/// Mails stored as blobs, parsed and their text read ahead of their turn ([`Pipeline::prepare`]).
pub struct ReadAheads {
    keys: Vec<String>,
    reads: Vec<Option<ReadAhead>>,
}

/// A mail parsed and its text read ahead of its turn.
struct ReadAhead {
    parsed: Result<InboundMessage, inbound::ParseError>,
    /// Language and sentiment, used when the mail is one a person wrote.
    reading: (Option<String>, crate::core::sentiment::Score),
}

/// Parses `mails` and reads their text on up to four threads, in order.
/// `None` where that panicked: the mail is parsed again in its turn, under
/// the guard that quarantines it. A batch of one is left to its turn.
fn read_ahead(mails: &[&[u8]], settings: &crate::core::settings::Settings) -> Vec<Option<ReadAhead>> {
    if mails.len() < 2 {
        return mails.iter().map(|_| None).collect();
    }
    let one = |raw: &[u8]| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let parsed = inbound::parse(raw, &settings.limits);
            let reading = match &parsed {
                Ok(m) => reading_of(&m.text, &settings.languages),
                Err(_) => (None, crate::core::sentiment::Score::default()),
            };
            ReadAhead { parsed, reading }
        }))
        .ok()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let chunk = mails.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = mails
            .chunks(chunk)
            .map(|part| {
                (
                    part.len(),
                    scope.spawn(move || part.iter().map(|raw| one(raw)).collect::<Vec<_>>()),
                )
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(n, w)| w.join().unwrap_or_else(|_| (0..n).map(|_| None).collect()))
            .collect()
    })
}

fn mark_source(w: &mut Change, origin: &Origin, raw_key: &str) {
    if let Some(key) = &origin.source_key {
        w.push(Op::Source(key.clone(), raw_key.to_string()));
    }
    if let Some(p) = origin.position {
        w.push(Op::Position(origin.mailbox.clone(), p));
    }
}

/// An event recording a sent or failed mail.
pub fn mail_event(now: Timestamp, kind: &str, message_id: &str, to: &[String], error: Option<&str>) -> Event {
    let mut detail = vec![("message_id", json!(message_id)), ("to", json!(to))];
    if let Some(e) = error {
        detail.push(("error", json!(e)));
    }
    Event::new(now, kind, "system", &detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfilled_mail_is_history_only_past_the_window() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let history = |t: &str| Origin::backfill("support", at(t), now, day).history;
        assert!(!history("2026-12-07T11:00:00Z"), "an hour ago");
        assert!(!history("2026-12-06T12:00:00Z"), "exactly the window ago");
        assert!(history("2026-12-06T11:59:59Z"), "a second past it");
        assert!(history("1970-01-01T00:00:00Z"));
        let forever = std::time::Duration::from_secs(u64::MAX);
        assert!(!Origin::backfill("support", at("1970-01-01T00:00:00Z"), now, forever).history);
        assert!(Origin::backfill("support", at("2026-12-07T11:00:00Z"), now, day).bulk);
        assert!(!Origin::live("support").history);
    }

    #[test]
    fn mail_a_source_finds_is_history_when_delivered_past_the_window() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let at = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        let (o, t) = Origin::delivered("support", at("2026-11-23T09:00:00Z"), now, day);
        assert!(o.history && o.bulk);
        assert_eq!(Some(t), at("2026-11-23T09:00:00Z"), "arrives when delivered");
        // Within the window, in the future (a wrong clock), or unknown: live, arriving now.
        for delivered in [at("2026-12-07T11:00:00Z"), at("2027-01-01T00:00:00Z"), None] {
            let (o, t) = Origin::delivered("support", delivered, now, day);
            assert!(!o.history && !o.bulk, "{delivered:?}");
            assert_eq!(t, now);
        }
    }
}
