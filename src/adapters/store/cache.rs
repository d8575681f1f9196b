//! A read cache for one batch of mail over a remote store: the batch's
//! source keys in one query, each mail's Message-IDs in one query, the next
//! ticket number and the tickets read, all kept in step with this batch's
//! own commits. Other instances' writes meanwhile are caught where it
//! matters by the store itself (unique keys, ticket revisions): a conflict
//! clears the cache and the mail is processed again from fresh reads.
//!
//! [`BatchCache::deferred`] goes one step further (group commit): each
//! mail's change is applied to the cache only, and [`BatchCache::finish`]
//! commits the whole batch as one transaction. Everything a mail reads
//! that an earlier mail of the batch wrote (Message-IDs, sources, tickets,
//! numbers, hashes, rate-limit records, agent loads, suppression, round
//! robin) is answered from the cache. A conflict at the end keeps nothing
//! of the batch; the caller processes it again.

use super::{
    Change, Count, HookEntry, IdEntry, Lane, Op, OutboxEntry, OutboxKey, Page, Position, QuarantineEntry, ReportTicket,
    Store, StoreError, TicketFilter, Timer,
};
use crate::core::model::{Event, MessageRecord, Ticket, TicketId};
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct State {
    /// Answers for Message-IDs asked or written in this batch (`None`: not stored).
    ids: HashMap<String, Option<IdEntry>>,
    /// Source keys of the batch known to be processed, and those asked.
    sources: HashSet<String>,
    asked_sources: HashSet<String>,
    /// Tickets read in this batch and not written since.
    tickets: HashMap<TicketId, Option<Ticket>>,
    next_ticket: Option<TicketId>,
    /// Suppression ends by address, and round-robin picks by queue, as read or written.
    suppressed: HashMap<String, Option<Timestamp>>,
    round_robin: HashMap<String, Option<String>>,
    /// Deferred mode: the batch's writes not yet committed, and what they add.
    pending: Option<Vec<Op>>,
    hashes: HashSet<String>,
    acks: Vec<(String, Timestamp)>,
    load_delta: HashMap<String, i64>,
}

/// The cache over `inner` for one batch.
#[derive(Debug)]
pub struct BatchCache {
    inner: Arc<dyn Store>,
    state: Mutex<State>,
}

impl BatchCache {
    /// A cache for a batch whose mails have these source keys (fetched now, in one query).
    pub fn new(inner: Arc<dyn Store>, source_keys: &[String]) -> Result<BatchCache, StoreError> {
        let sources = inner.known_sources(source_keys)?;
        Ok(BatchCache {
            inner,
            state: Mutex::new(State {
                sources,
                asked_sources: source_keys.iter().cloned().collect(),
                ..State::default()
            }),
        })
    }

    /// A cache that keeps the batch's changes until [`BatchCache::finish`].
    pub fn deferred(inner: Arc<dyn Store>, source_keys: &[String]) -> Result<BatchCache, StoreError> {
        let cache = BatchCache::new(inner, source_keys)?;
        cache.state().pending = Some(Vec::new());
        Ok(cache)
    }

    /// Commits the deferred changes as one transaction (nothing of them on error).
    pub fn finish(&self) -> Result<(), StoreError> {
        let ops = self.state().pending.replace(Vec::new()).unwrap_or_default();
        if ops.is_empty() {
            return Ok(());
        }
        let result = self.inner.commit(Change { ops });
        if result.is_err() {
            self.clear();
        }
        result
    }

    /// Applies a deferred change to the answers (the ticket revisions as the store will give them).
    fn defer(&self, change: Change) -> Result<(), StoreError> {
        // Loads before the lock: a written ticket never read here is read from the store.
        let mut before: HashMap<TicketId, Option<Ticket>> = HashMap::new();
        for op in &change.ops {
            if let Op::Ticket(t) = op
                && t.revision != 0
                && !self.state().tickets.contains_key(&t.id)
                && !before.contains_key(&t.id)
            {
                before.insert(t.id, self.inner.ticket(t.id)?);
            }
        }
        let mut s = self.state();
        for (id, t) in before {
            s.tickets.insert(id, t);
        }
        for op in &change.ops {
            match op {
                Op::Suppress(a, until) => {
                    s.suppressed.insert(a.clone(), Some(*until));
                }
                Op::RoundRobin(q, a) => {
                    s.round_robin.insert(q.clone(), Some(a.clone()));
                }
                // A reference is written only where nothing was, as in the store.
                Op::MessageId(id, e) if e.stored || matches!(s.ids.get(id), Some(None)) => {
                    s.ids.insert(id.clone(), Some(e.clone()));
                }
                Op::Source(key, _) => {
                    s.sources.insert(key.clone());
                }
                Op::NextTicket(n) => s.next_ticket = Some(*n),
                Op::Hash(h) => {
                    s.hashes.insert(h.clone());
                }
                Op::Ack(a, at) => s.acks.push((a.clone(), *at)),
                Op::Ticket(t) => {
                    let old = s.tickets.get(&t.id).cloned().flatten();
                    let counted = |t: &Ticket| t.assignee.clone().filter(|_| t.is_active());
                    if let Some(a) = old.as_ref().and_then(counted) {
                        *s.load_delta.entry(a).or_default() -= 1;
                    }
                    if let Some(a) = counted(t) {
                        *s.load_delta.entry(a).or_default() += 1;
                    }
                    // The store bumps a revision by one per write.
                    let mut stored = (**t).clone();
                    stored.revision = t.revision + 1;
                    s.tickets.insert(t.id, Some(stored));
                }
                _ => {}
            }
        }
        s.pending.get_or_insert_with(Vec::new).extend(change.ops);
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets everything (after a conflict: another instance wrote first).
    pub fn clear(&self) {
        let mut s = self.state();
        s.ids.clear();
        s.sources.clear();
        s.asked_sources.clear();
        s.tickets.clear();
        s.next_ticket = None;
        s.suppressed.clear();
        s.round_robin.clear();
        if s.pending.is_some() {
            s.pending = Some(Vec::new());
        }
        s.hashes.clear();
        s.acks.clear();
        s.load_delta.clear();
    }
}

impl Store for BatchCache {
    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        if let Some(t) = self.state().tickets.get(&id) {
            return Ok(t.clone());
        }
        let t = self.inner.ticket(id)?;
        self.state().tickets.insert(id, t.clone());
        Ok(t)
    }
    fn next_ticket_id(&self) -> Result<TicketId, StoreError> {
        if let Some(n) = self.state().next_ticket {
            return Ok(n);
        }
        let n = self.inner.next_ticket_id()?;
        self.state().next_ticket = Some(n);
        Ok(n)
    }
    fn list(&self, filter: &TicketFilter, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.inner.list(filter, cursor, limit)
    }
    fn counts(&self) -> Result<Vec<Count>, StoreError> {
        self.inner.counts()
    }
    fn report_tickets(&self, since: Option<Timestamp>, until: Timestamp) -> Result<Vec<ReportTicket>, StoreError> {
        self.inner.report_tickets(since, until)
    }
    fn messages(&self, id: TicketId) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.messages(id)
    }
    fn events(&self, id: TicketId) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id)
    }
    fn message_id(&self, id: &str) -> Result<Option<IdEntry>, StoreError> {
        if let Some(e) = self.state().ids.get(id) {
            return Ok(e.clone());
        }
        let e = self.inner.message_id(id)?;
        self.state().ids.insert(id.to_string(), e.clone());
        Ok(e)
    }
    fn prefetch_message_ids(&self, ids: &[&str]) -> Result<(), StoreError> {
        let wanted: Vec<String> = {
            let s = self.state();
            let mut w: Vec<String> = ids
                .iter()
                .filter(|i| !s.ids.contains_key(**i))
                .map(|i| i.to_string())
                .collect();
            w.sort_unstable();
            w.dedup();
            w
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let mut found = self.inner.message_ids(&wanted)?;
        let mut s = self.state();
        for id in wanted {
            let e = found.remove(&id);
            s.ids.insert(id, e);
        }
        Ok(())
    }
    fn has_hash(&self, hash: &str) -> Result<bool, StoreError> {
        if self.state().hashes.contains(hash) {
            return Ok(true);
        }
        self.inner.has_hash(hash)
    }
    fn has_source_prefix(&self, prefix: &str) -> Result<bool, StoreError> {
        if self.state().sources.iter().any(|k| k.starts_with(prefix)) {
            return Ok(true);
        }
        self.inner.has_source_prefix(prefix)
    }
    fn has_source(&self, key: &str) -> Result<bool, StoreError> {
        {
            let s = self.state();
            if s.sources.contains(key) {
                return Ok(true);
            }
            if s.asked_sources.contains(key) {
                return Ok(false);
            }
        }
        self.inner.has_source(key)
    }
    fn position(&self, mailbox: &str) -> Result<Option<Position>, StoreError> {
        self.inner.position(mailbox)
    }
    fn acks_since(&self, address: &str, since: Timestamp) -> Result<u32, StoreError> {
        let pending = self
            .state()
            .acks
            .iter()
            .filter(|(a, at)| a == address && *at >= since)
            .count() as u32;
        Ok(self.inner.acks_since(address, since)? + pending)
    }
    fn suppressed_until(&self, address: &str) -> Result<Option<Timestamp>, StoreError> {
        if let Some(until) = self.state().suppressed.get(address) {
            return Ok(*until);
        }
        let until = self.inner.suppressed_until(address)?;
        self.state().suppressed.insert(address.to_string(), until);
        Ok(until)
    }
    fn loads(&self) -> Result<HashMap<String, u32>, StoreError> {
        let mut loads = self.inner.loads()?;
        for (agent, d) in &self.state().load_delta {
            let n = loads.entry(agent.clone()).or_default();
            *n = (i64::from(*n) + d).max(0) as u32;
        }
        loads.retain(|_, n| *n > 0);
        Ok(loads)
    }
    fn round_robin(&self, queue: &str) -> Result<Option<String>, StoreError> {
        if let Some(a) = self.state().round_robin.get(queue) {
            return Ok(a.clone());
        }
        let a = self.inner.round_robin(queue)?;
        self.state().round_robin.insert(queue.to_string(), a.clone());
        Ok(a)
    }
    fn due_until(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        self.inner.due_until(now, limit)
    }
    fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.inner.next_due()
    }
    fn outbox(
        &self,
        lane: Lane,
        after: Option<OutboxKey>,
        limit: usize,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        self.inner.outbox(lane, after, limit)
    }
    fn outbox_len(&self) -> Result<u64, StoreError> {
        self.inner.outbox_len()
    }
    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.inner.quarantine()
    }
    fn hooks(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, HookEntry)>, StoreError> {
        self.inner.hooks(after, limit)
    }
    fn put_blobs(&self, blobs: &[&[u8]]) -> Result<Vec<String>, StoreError> {
        self.inner.put_blobs(blobs)
    }
    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.blob(key)
    }
    fn sweep_blobs(&self) -> Result<u64, StoreError> {
        self.inner.sweep_blobs()
    }
    fn prune_acks(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.inner.prune_acks(before)
    }
    fn next_seq(&self) -> Result<u64, StoreError> {
        self.inner.next_seq()
    }
    fn commit(&self, change: Change) -> Result<(), StoreError> {
        if self.state().pending.is_some() {
            return self.defer(change);
        }
        // What this commit writes, to keep the answers in step once it is in.
        let mut ids: Vec<(String, IdEntry)> = Vec::new();
        let mut sources = Vec::new();
        let mut tickets = Vec::new();
        let mut next = None;
        let mut suppress = Vec::new();
        let mut picks = Vec::new();
        for op in &change.ops {
            match op {
                Op::Suppress(a, until) => suppress.push((a.clone(), *until)),
                Op::RoundRobin(q, a) => picks.push((q.clone(), a.clone())),
                Op::MessageId(id, e) => ids.push((id.clone(), e.clone())),
                Op::Source(key, _) => sources.push(key.clone()),
                Op::Ticket(t) => tickets.push(t.id),
                Op::NextTicket(n) => next = Some(*n),
                _ => {}
            }
        }
        if let Err(e) = self.inner.commit(change) {
            self.clear();
            return Err(e);
        }
        let mut s = self.state();
        for (id, e) in ids {
            // A reference is written only where nothing was (as in the
            // store); where the cache does not know, the store is asked.
            if e.stored || matches!(s.ids.get(&id), Some(None)) {
                s.ids.insert(id, Some(e));
            }
        }
        s.sources.extend(sources);
        // Written tickets are read again: the store gives them their new revision.
        for t in tickets {
            s.tickets.remove(&t);
        }
        if next.is_some() {
            s.next_ticket = next;
        }
        for (a, until) in suppress {
            s.suppressed.insert(a, Some(until));
        }
        for (q, a) in picks {
            s.round_robin.insert(q, Some(a));
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn lease(&self, name: &str) -> Result<bool, StoreError> {
        self.inner.lease(name)
    }
    fn release(&self, name: &str) -> Result<(), StoreError> {
        self.inner.release(name)
    }
    fn lease_interval(&self) -> Option<std::time::Duration> {
        self.inner.lease_interval()
    }
    fn claim_outbox(
        &self,
        lane: Lane,
        after: Option<OutboxKey>,
        limit: usize,
        hold: std::time::Duration,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        self.inner.claim_outbox(lane, after, limit, hold)
    }
    fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping()
    }
    fn failed(&self) -> Option<String> {
        self.inner.failed()
    }
}
