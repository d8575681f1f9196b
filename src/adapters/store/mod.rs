//! The store boundary: what the pipeline, the timers, the sender, the API
//! and the CLI may ask of storage, in the words of the domain. Backends
//! implement [`Store`]; nothing above this module sees a tree, a table or a
//! byte key. Mail bodies live beside the index in a content-addressed
//! [`blobs::Blobs`] store.
//!
//! Writes go through one [`Change`] per mail (or per timer batch, per sent
//! mail), applied atomically by [`Store::commit`]; the backend keeps its
//! secondary indexes, counters and agent loads in step inside that same
//! commit. [`Store::flush`] makes everything committed durable; sources mark
//! mail processed only after it.

pub mod blobs;
pub mod cache;
pub mod postgres;
pub mod sled;

use crate::core::model::{Event, MessageRecord, Status, Ticket, TicketId};
use crate::core::outgoing::OutgoingMail;
use crate::core::thread::ThreadIndex;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually the running daemon) holds the store.
    #[error("the store at {0} is in use by another postdesk process (is the daemon running?)")]
    Locked(String),
    /// The embedded database failed.
    #[error("store error: {0}")]
    Sled(#[from] ::sled::Error),
    /// The blob store failed.
    #[error("blob store error at {path}: {error}")]
    Blob {
        /// The file or folder.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The database server failed or cannot be reached.
    #[error("database: {0}")]
    Database(String),
    /// Another instance changed the same records first; the work is retried.
    #[error("conflict with another instance: {0}")]
    Conflict(String),
    /// A list cursor that no page gave out.
    #[error("bad cursor {0:?}: pass back the `next` of a previous page")]
    BadCursor(String),
    /// What this backend does not do, and what to do instead.
    #[error("{0}")]
    Unsupported(&'static str),
    /// Long work given up because the process is stopping ([`Store::stop`]).
    #[error("the daemon is stopping: {0}")]
    Stopping(&'static str),
    /// A record could not be read.
    #[error("corrupt record in {tree}: {message}")]
    Corrupt {
        /// Which kind of record.
        tree: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// What a backend that makes no backup of its own says instead.
pub const BACKUP_ELSEWHERE: &str =
    "the database is backed up with its own tools (pg_dump, or its continuous archiving); it holds the raw mail too";

/// [`Store::backup`] into a new folder of `data_dir/backups`, named by the
/// time `now` in UTC to the second (`20261207T214503Z`; `…Z-2`, `…Z-3`
/// for the next ones of the same second); then, with `keep`, the older
/// backups but the newest `keep` removed ([`prune_backups`]).
pub fn backup_now(
    store: &dyn Store,
    data_dir: &Path,
    now: Timestamp,
    keep: Option<usize>,
) -> Result<Backup, StoreError> {
    let mut backup = backup_named(store, data_dir, now)?;
    if let Some(keep) = keep {
        backup.removed = prune_backups(data_dir, keep)?;
    }
    Ok(backup)
}

fn backup_named(store: &dyn Store, data_dir: &Path, now: Timestamp) -> Result<Backup, StoreError> {
    let name = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let folder = data_dir.join("backups");
    let mut n = 1;
    loop {
        let to = match n {
            1 => folder.join(&name),
            n => folder.join(format!("{name}-{n}")),
        };
        match store.backup(&to) {
            Err(StoreError::Sled(::sled::Error::Io(e))) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                n += 1;
            }
            done => return done,
        }
    }
}

/// A copy of the store that [`Store::backup`] made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Its folder.
    pub path: std::path::PathBuf,
    /// Bytes of its records (`store/`).
    pub store_bytes: u64,
    /// Bytes of its raw mail (`blobs/`).
    pub blob_bytes: u64,
    /// The older backups removed after it (`--keep`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<std::path::PathBuf>,
}

/// Removes the backups in `data_dir/backups` but the newest `keep`: only
/// folders named as [`backup_now`] names them, nothing else there. Returns
/// what it removed, oldest first.
pub fn prune_backups(data_dir: &Path, keep: usize) -> Result<Vec<std::path::PathBuf>, StoreError> {
    let folder = data_dir.join("backups");
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| StoreError::Blob { path, error }
    };
    let mut found: Vec<((String, u32), std::path::PathBuf)> = Vec::new();
    for e in std::fs::read_dir(&folder).map_err(io(&folder))? {
        let e = e.map_err(io(&folder))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let (stamp, n) = match name.split_once('-') {
            Some((stamp, n)) => (stamp, n.parse::<u32>().ok().filter(|n| *n >= 2)),
            None => (name.as_str(), Some(1)),
        };
        let b = stamp.as_bytes();
        let stamped = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b.iter()
                .enumerate()
                .all(|(i, c)| matches!(i, 8 | 15) || c.is_ascii_digit());
        if let (true, Some(n)) = (stamped && e.path().is_dir(), n) {
            found.push(((stamp.to_string(), n), e.path()));
        }
    }
    found.sort();
    let old = found.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for (_, path) in found.into_iter().take(old) {
        match std::fs::remove_dir_all(&path) {
            // Another backup's pruning took it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            done => done.map_err(io(&path))?,
        }
        removed.push(path);
    }
    Ok(removed)
}

/// An outgoing mail waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The mail.
    pub mail: OutgoingMail,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this time.
    pub next_attempt: Timestamp,
    /// Last temporary error.
    pub last_error: Option<String>,
}

/// The two outbox lanes. The sender takes from both in turn, so mail that
/// answers someone now never waits behind a bulk backlog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Lane {
    /// Mail caused by mail arriving now: acknowledgements, relays, notifications.
    Live = 0,
    /// Mail from backfills and timers (reminders, escalations, surveys).
    Bulk = 1,
}

/// Where an outbox entry sits: its lane and its place in queue order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxKey {
    /// The lane.
    pub lane: Lane,
    /// Queue order within the lane.
    pub seq: u64,
}

/// A webhook delivery: waiting, retrying, or failed for good (kept and
/// listed until retried).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookEntry {
    /// The `[[webhook]]`'s name.
    pub hook: String,
    /// The event, like `ticket.created`.
    pub event: String,
    /// The ticket it is about.
    pub ticket: TicketId,
    /// The delivery's id (also in the body), unique.
    pub id: String,
    /// The request body, as it is sent on every attempt.
    pub body: String,
    /// When it was queued.
    pub created: Timestamp,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this time.
    pub next_attempt: Timestamp,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed for good: kept for a look and a retry, not sent again by itself.
    #[serde(default)]
    pub failed: bool,
}

/// A mail kept raw because it could not be processed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// When it was quarantined.
    pub at: Timestamp,
    /// The mailbox it came from.
    pub mailbox: String,
    /// Where in the mailbox (UID or file name).
    pub source: Option<String>,
    /// Why.
    pub reason: String,
    /// Blob key (SHA-256) of the raw mail.
    pub raw_key: String,
    /// Size in bytes.
    pub size: usize,
}

/// A mailbox position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// IMAP UIDVALIDITY (0 for a Maildir, whose position is only whether it
    /// is being taken over).
    pub uid_validity: u32,
    /// Highest UID processed (0 for a Maildir).
    pub last_uid: u32,
    /// postdesk is taking the mailbox over: it has not yet read the folder
    /// to its end once, so old mail still waiting there is history (kept
    /// across a restart; absent in positions written before it: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub taking_over: bool,
}

/// One `Message-ID → ticket` index entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdEntry {
    /// The ticket.
    pub ticket: TicketId,
    /// Whether a message with this id is stored (else it is only referenced).
    pub stored: bool,
    /// The content hash of the stored inbound message (From, Date, Subject,
    /// body): a second mail with the same Message-ID is a duplicate only when
    /// this matches. `None` for our own mail and for entries written before it existed.
    pub hash: Option<String>,
}

/// One timer: a ticket's deadline of some kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// When it is due.
    pub at: Timestamp,
    /// The ticket.
    pub ticket: TicketId,
    /// The timer kind ([`crate::core::sla::TimerKind`] as a byte).
    pub kind: u8,
}

/// One write of a [`Change`].
#[derive(Clone, Debug)]
pub enum Op {
    /// Puts a ticket; the backend updates its indexes, counters and loads.
    Ticket(Box<Ticket>),
    /// Appends a message to a ticket.
    Message(TicketId, Box<MessageRecord>),
    /// Appends an event to a ticket's log.
    Event(TicketId, Box<Event>),
    /// Indexes a Message-ID.
    MessageId(String, IdEntry),
    /// Records the content hash of a stored mail without Message-ID (or with a reused one).
    Hash(String),
    /// Marks a source position processed, naming the mail's blob.
    Source(String, String),
    /// Records a mailbox position.
    Position(String, Position),
    /// Queues an outgoing mail.
    Enqueue(Lane, Box<OutboxEntry>),
    /// Rewrites a queued mail (a retry).
    Requeue(OutboxKey, Box<OutboxEntry>),
    /// Removes a queued mail (sent or failed for good).
    Dequeue(OutboxKey),
    /// Keeps a mail in quarantine (its blob must be stored).
    Quarantine(Box<QuarantineEntry>),
    /// Records a mail sent to an address at a time (rate limits).
    Ack(String, Timestamp),
    /// Suppresses automatic mail to an address until a time.
    Suppress(String, Timestamp),
    /// The number the next new ticket gets.
    NextTicket(TicketId),
    /// The agent a queue's round robin picked last.
    RoundRobin(String, String),
    /// Adds a timer.
    AddTimer(Timer),
    /// Removes a timer.
    RemoveTimer(Timer),
    /// Queues a webhook delivery.
    Hook(Box<HookEntry>),
    /// Rewrites a queued delivery (a retry, or failed for good).
    HookUpdate(u64, Box<HookEntry>),
    /// Removes a delivery (delivered).
    HookDone(u64),
}

/// A set of writes applied atomically by [`Store::commit`].
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// The writes, in order.
    pub ops: Vec<Op>,
}

impl Change {
    /// Adds a write.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }
    /// Puts a ticket.
    pub fn ticket(&mut self, t: &Ticket) {
        self.push(Op::Ticket(Box::new(t.clone())));
    }
    /// Appends a message.
    pub fn message(&mut self, id: TicketId, m: &MessageRecord) {
        self.push(Op::Message(id, Box::new(m.clone())));
    }
    /// Appends an event.
    pub fn event(&mut self, id: TicketId, e: &Event) {
        self.push(Op::Event(id, Box::new(e.clone())));
    }
    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Which tickets a list wants; every field set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TicketFilter {
    /// Status.
    pub status: Option<Status>,
    /// Queue.
    pub queue: Option<String>,
    /// Assignee (agent name).
    pub assignee: Option<String>,
    /// Requester address (case-insensitive).
    pub requester: Option<String>,
    /// Updated at or after.
    pub updated_since: Option<Timestamp>,
}

impl TicketFilter {
    /// Whether `t` matches.
    pub fn matches(&self, t: &Ticket) -> bool {
        self.status.is_none_or(|s| s == t.status)
            && self.queue.as_ref().is_none_or(|q| *q == t.queue)
            && self.assignee.as_ref().is_none_or(|a| Some(a) == t.assignee.as_ref())
            && self
                .requester
                .as_ref()
                .is_none_or(|r| r.eq_ignore_ascii_case(&t.requester.email))
            && self.updated_since.is_none_or(|u| t.updated_at >= u)
    }
}

/// Tickets of one status in one queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    /// The status.
    pub status: Status,
    /// The queue.
    pub queue: String,
    /// How many.
    pub tickets: u64,
}

/// One page of a ticket list and the cursor of the next, if any.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// Tickets, by number (or by update time with `updated_since`).
    pub tickets: Vec<Ticket>,
    /// Pass back to continue after the last ticket of this page.
    pub next: Option<String>,
}

/// A status as the small number both backends keep in keys and columns.
fn status_number(s: Status) -> u8 {
    match s {
        Status::New => 0,
        Status::Open => 1,
        Status::Pending => 2,
        Status::Resolved => 3,
        Status::Closed => 4,
    }
}

/// The status a stored number names.
fn status_of_number(b: u8) -> Option<Status> {
    Some(match b {
        0 => Status::New,
        1 => Status::Open,
        2 => Status::Pending,
        3 => Status::Resolved,
        4 => Status::Closed,
        _ => return None,
    })
}

/// The most tickets one page may hold.
pub const MAX_PAGE: usize = 1000;

/// A ticket a report reads ([`Store::report_tickets`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportTicket {
    /// Its number.
    pub id: TicketId,
    /// No event on or after the period's first day: nothing happened to it
    /// in the period, so what it was through the period is what its record
    /// says now, and its events need not be read.
    pub quiet: bool,
}

/// One ticket as a report reads it ([`Store::report_reads`]).
#[derive(Clone, Debug)]
pub struct ReportRead {
    /// What the report reads of its record.
    pub facts: crate::core::report::Facts,
    /// Its events in order; none read for a quiet ticket.
    pub events: Option<Vec<Event>>,
}

/// The tickets of a report from the numbers of those with events on or after
/// the period's first day (`touched`) and of the active ones, in number
/// order: an active ticket not touched is quiet.
pub fn report_set(mut touched: Vec<u64>, active: Vec<u64>) -> Vec<ReportTicket> {
    touched.sort_unstable();
    touched.dedup();
    let quiet: Vec<u64> = active
        .into_iter()
        .filter(|id| touched.binary_search(id).is_err())
        .collect();
    let ticket = |quiet: bool| {
        move |id: u64| ReportTicket {
            id: TicketId(id),
            quiet,
        }
    };
    let mut out: Vec<ReportTicket> = touched
        .into_iter()
        .map(ticket(false))
        .chain(quiet.into_iter().map(ticket(true)))
        .collect();
    out.sort_unstable_by_key(|t| t.id);
    out.dedup_by_key(|t| t.id);
    out
}

/// What the store can do; the sled backend is the embedded default.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A ticket.
    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError>;
    /// What a report reads of a ticket (a backend may decode only that).
    fn ticket_facts(&self, id: TicketId) -> Result<Option<crate::core::report::Facts>, StoreError> {
        Ok(self.ticket(id)?.as_ref().map(crate::core::report::Facts::from))
    }
    /// The number the next new ticket gets.
    fn next_ticket_id(&self) -> Result<TicketId, StoreError>;
    /// One page of the tickets matching `filter`, after `cursor` (from a
    /// previous page), at most `limit` (capped at [`MAX_PAGE`]). Read through
    /// an index: the cost follows the page, not the number of tickets.
    fn list(&self, filter: &TicketFilter, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError>;
    /// Tickets by (status, queue), kept as counters on commit.
    fn counts(&self) -> Result<Vec<Count>, StoreError>;
    /// Tickets that may matter to a report of `since..until`: every ticket
    /// with an event on or after `since`'s day, and every active ticket (those
    /// without such an event quiet), leaving out (where the backend knows it
    /// cheaply) tickets with no event before `until`'s day ends, which were
    /// created after the period. By number; the caller still checks each
    /// ticket's creation. Without `since`, every ticket, none quiet.
    fn report_tickets(&self, since: Option<Timestamp>, until: Timestamp) -> Result<Vec<ReportTicket>, StoreError>;
    /// What a report reads of `tickets` (from [`report_tickets`](Self::report_tickets)),
    /// in their order: the facts of each one found that `wanted` keeps, with
    /// its events unless it is quiet. One ticket after the other here; a
    /// remote backend reads a batch in a few queries.
    fn report_reads(
        &self,
        tickets: &[ReportTicket],
        wanted: &dyn Fn(&crate::core::report::Facts) -> bool,
    ) -> Result<Vec<ReportRead>, StoreError> {
        let mut out = Vec::with_capacity(tickets.len());
        for r in tickets {
            let Some(facts) = self.ticket_facts(r.id)? else {
                continue;
            };
            if !wanted(&facts) {
                continue;
            }
            let events = if r.quiet { None } else { Some(self.events(r.id)?) };
            out.push(ReportRead { facts, events });
        }
        Ok(out)
    }
    /// A ticket's messages in order.
    fn messages(&self, id: TicketId) -> Result<Vec<MessageRecord>, StoreError>;
    /// A ticket's events in order.
    fn events(&self, id: TicketId) -> Result<Vec<Event>, StoreError>;

    /// Looks up a Message-ID.
    fn message_id(&self, id: &str) -> Result<Option<IdEntry>, StoreError>;
    /// Whether a content hash is known.
    fn has_hash(&self, hash: &str) -> Result<bool, StoreError>;
    /// Whether a source key was processed.
    fn has_source(&self, key: &str) -> Result<bool, StoreError>;
    /// Whether any source key starting with `prefix` was processed (a
    /// source that has delivered mail before).
    fn has_source_prefix(&self, prefix: &str) -> Result<bool, StoreError>;
    /// A mailbox's position.
    fn position(&self, mailbox: &str) -> Result<Option<Position>, StoreError>;

    /// Mail recorded for `address` at or after `since` (rate limits).
    fn acks_since(&self, address: &str, since: Timestamp) -> Result<u32, StoreError>;
    /// Until when automatic mail to `address` is suppressed after a hard bounce, if it ever was.
    fn suppressed_until(&self, address: &str) -> Result<Option<Timestamp>, StoreError>;
    /// Whether `address` is suppressed at `now`.
    fn suppressed(&self, address: &str, now: Timestamp) -> Result<bool, StoreError> {
        Ok(self.suppressed_until(address)?.is_some_and(|u| u > now))
    }
    /// Active tickets per assigned agent.
    fn loads(&self) -> Result<HashMap<String, u32>, StoreError>;
    /// The agent a queue's round robin picked last.
    fn round_robin(&self, queue: &str) -> Result<Option<String>, StoreError>;

    /// Timers due at or before `now`, in time order, at most `limit`.
    fn due_until(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError>;
    /// When the next timer is due.
    fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Up to `limit` outbox entries of `lane` after `after`, in queue order.
    fn outbox(
        &self,
        lane: Lane,
        after: Option<OutboxKey>,
        limit: usize,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError>;
    /// Queued mails (a counter, not a scan).
    fn outbox_len(&self) -> Result<u64, StoreError>;
    /// Queued mails and when the oldest was queued (the head of each lane).
    fn outbox_depth(&self) -> Result<(u64, Option<Timestamp>), StoreError> {
        let mut oldest: Option<Timestamp> = None;
        for lane in [Lane::Live, Lane::Bulk] {
            if let Some((_, e)) = self.outbox(lane, None, 1)?.into_iter().next() {
                oldest = Some(oldest.map_or(e.mail.date, |o| o.min(e.mail.date)));
            }
        }
        Ok((self.outbox_len()?, oldest))
    }
    /// Quarantined mail in order.
    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, StoreError>;
    /// Up to `limit` webhook deliveries after `after`, in queue order (failed ones too).
    fn hooks(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, HookEntry)>, StoreError>;

    /// Writes blobs and makes them durable (before any record names them).
    /// Returns their keys (SHA-256, hex), in order.
    fn put_blobs(&self, blobs: &[&[u8]]) -> Result<Vec<String>, StoreError>;
    /// A blob's bytes.
    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes blobs no record names (older than a grace period, so mail
    /// being processed now is safe); returns how many.
    fn sweep_blobs(&self) -> Result<u64, StoreError>;
    /// Forgets the `Ack` records (rate limits' sent mail, spent one-time
    /// values) from before `before`; returns how many. The daemon keeps
    /// [`ACKS_KEPT`].
    fn prune_acks(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Copies the whole store, as it is at one moment, into the new folder
    /// `to` (`store/` and `blobs/`: the two folders of a `data_dir`); writes
    /// wait meanwhile. Only the embedded store makes its own copy: a database
    /// is backed up with its own tools.
    fn backup(&self, to: &Path) -> Result<Backup, StoreError> {
        let _ = to;
        Err(StoreError::Unsupported(BACKUP_ELSEWHERE))
    }

    /// A unique, increasing number (for nonces).
    fn next_seq(&self) -> Result<u64, StoreError>;
    /// Applies a change atomically.
    fn commit(&self, change: Change) -> Result<(), StoreError>;
    /// Makes every committed change durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Why the store can write no more until it is opened again, once a
    /// write met an I/O error it keeps (the embedded store after a full
    /// disk); `None` while it can. The daemon stops then, and its restart
    /// opens the store again from what is on disk.
    fn failed(&self) -> Option<String> {
        None
    }
    /// The process is stopping: long work that holds writes back (a
    /// backup's copy) gives up at its next step instead of making the stop
    /// wait for it.
    fn stop(&self) {}

    /// Takes or renews this instance's lease on `name` (a mailbox, the
    /// timers); `true` while held. Instances sharing a store split the work
    /// this way. The embedded store belongs to one process: always `true`.
    fn lease(&self, name: &str) -> Result<bool, StoreError> {
        let _ = name;
        Ok(true)
    }
    /// Gives a lease up (at shutdown), so another instance takes it at once.
    fn release(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        Ok(())
    }
    /// How often a holder renews its leases; `None` when leases are not shared.
    fn lease_interval(&self) -> Option<std::time::Duration> {
        None
    }
    /// Takes up to `limit` outbox entries of `lane` after `after` to send:
    /// entries another instance claimed within `hold` are skipped, so each
    /// mail goes out once. The embedded store reads them as [`Store::outbox`].
    fn claim_outbox(
        &self,
        lane: Lane,
        after: Option<OutboxKey>,
        limit: usize,
        hold: std::time::Duration,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        let _ = hold;
        self.outbox(lane, after, limit)
    }
    /// Looks up several Message-IDs at once (the found ones).
    fn message_ids(&self, ids: &[String]) -> Result<HashMap<String, IdEntry>, StoreError> {
        let mut out = HashMap::new();
        for id in ids {
            if let Some(e) = self.message_id(id)? {
                out.insert(id.clone(), e);
            }
        }
        Ok(out)
    }
    /// Which of these source keys were processed.
    fn known_sources(&self, keys: &[String]) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut out = std::collections::HashSet::new();
        for k in keys {
            if self.has_source(k)? {
                out.insert(k.clone());
            }
        }
        Ok(out)
    }
    /// A hint that these Message-IDs are about to be looked up (a batch
    /// cache fetches them in one query); nothing by default.
    fn prefetch_message_ids(&self, ids: &[&str]) -> Result<(), StoreError> {
        let _ = ids;
        Ok(())
    }
    /// Whether each read is a round trip worth saving: the pipeline then
    /// reads a batch through a [`cache::BatchCache`].
    fn remote(&self) -> bool {
        false
    }
    /// Whether the store answers now (`/readyz`); the error says why not.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The store's bytes on disk by part (`/metrics`); none where the
    /// backend's files are not the daemon's (PostgreSQL).
    fn disk_bytes(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        Ok(Vec::new())
    }
    /// The index's bytes right after its last compaction (`/metrics`); `None`
    /// before the first, or where the backend does not compact.
    fn compacted_bytes(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}

/// Settings of the store (`[store]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// The embedded database's page cache, in bytes.
    pub cache_bytes: u64,
    /// Which backend.
    pub backend: Backend,
    /// How often the daemon sweeps unreferenced blobs (its first sweep waits
    /// this or ten minutes, whichever is shorter).
    pub sweep_every: std::time::Duration,
    /// Whether the daemon compacts the sled store at its start when it has
    /// doubled since its last compaction.
    pub compact_at_start: bool,
}

/// How long the daemon keeps `Ack` records: a rate limit counts the last
/// hour, and a sign-in link lives a day at most, a form two hours, a session
/// twelve hours; their spent values need keeping no longer than that. Without
/// pruning, every acknowledgement ever sent stayed a key in the store.
pub const ACKS_KEPT: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            cache_bytes: 8 * 1024 * 1024,
            backend: Backend::Sled,
            sweep_every: std::time::Duration::from_secs(86_400),
            compact_at_start: true,
        }
    }
}

/// The store backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// sled under `data_dir/store`, blobs in files: one process.
    Sled,
    /// PostgreSQL: several instances may share it.
    Postgres(Box<PgSettings>),
}

/// How to reach PostgreSQL (`[store] backend = "postgres"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgSettings {
    /// A connection URL or key=value string (without password), instead of the four fields below.
    pub url: Option<String>,
    /// Host name, IP address or socket folder.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// Where the password comes from.
    pub password: Option<crate::adapters::config::SecretSource>,
    /// A CA certificate (PEM): TLS is required and the server checked against it.
    pub ca_file: Option<std::path::PathBuf>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a mailbox or timer lease lasts without renewal before another instance takes it.
    pub lease_timeout: std::time::Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            url: None,
            host: "localhost".into(),
            port: 5432,
            database: String::new(),
            user: String::new(),
            password: None,
            ca_file: None,
            pool_size: 8,
            lease_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Opens the configured store: sled under `data_dir` (upgrading an older
/// layout in place), or PostgreSQL (migrating its schema).
pub fn open(data_dir: &Path, settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match &settings.backend {
        Backend::Sled => Arc::new(sled::SledStore::open(data_dir, settings)?),
        Backend::Postgres(pg) => Arc::new(postgres::PgStore::open(pg)?),
    })
}

/// How many merges [`resolve`] follows before it gives up (a merge never
/// makes a cycle; this bounds a damaged store).
const MERGE_HOPS: usize = 16;

/// A ticket by number, following merges: the ticket that `id` now lives in.
pub fn resolve(store: &dyn Store, id: TicketId) -> Result<Option<Ticket>, StoreError> {
    let mut ticket = store.ticket(id)?;
    for _ in 0..MERGE_HOPS {
        match ticket.as_ref().and_then(|t| t.merged_into) {
            Some(into) => ticket = store.ticket(into)?,
            None => break,
        }
    }
    Ok(ticket)
}

/// The ticket (following merges) that holds the stored message with this Message-ID.
pub fn ticket_of_stored(store: &dyn Store, message_id: &str) -> Result<Option<TicketId>, StoreError> {
    match store.message_id(message_id)? {
        Some(e) if e.stored => Ok(resolve(store, e.ticket)?.map(|t| t.id)),
        _ => Ok(None),
    }
}

/// A store seen as the threading index. A ticket merged into another
/// answers as the one it was merged into, so its Message-IDs and tokens
/// thread there.
pub struct Index<'a>(pub &'a dyn Store);

impl ThreadIndex for Index<'_> {
    fn ticket_of_message_id(&self, id: &str) -> Option<(TicketId, bool)> {
        self.0.message_id(id).ok().flatten().map(|e| (e.ticket, e.stored))
    }
    fn ticket(&self, id: TicketId) -> Option<Ticket> {
        resolve(self.0, id).ok().flatten()
    }
}
