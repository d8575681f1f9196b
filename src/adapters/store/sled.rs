//! The embedded backend: sled trees behind [`Store`], blobs in pack files
//! (their index in the tree `blobs`, kept by [`Blobs`]).
//!
//! Trees: `meta` (counters, schema version, round robin), `tickets`,
//! `messages` and `events` (a ticket's records a chunk to a key: ticket +
//! `c` + seq for full chunks, ticket + 0xFF for the open one), `msgids`, `hashes`, `sources`,
//! `positions`, `outbox` (lane + seq), `quarantine`, `acks`, `suppress`,
//! `loads`, `due` (time + ticket + kind), and the indexes kept in the same
//! transaction as the records they index: `ix` (status, queue, assignee,
//! requester, updated time → ticket), `counts` (status + queue → tickets),
//! `activity` (day + ticket: a report's period finds its tickets) and
//! `blobrefs` (blob keys named by a record). Records are a version byte
//! followed by JSON; numbers in keys are big-endian so ranges sort by number.
//!
//! Schema 1 (raw mail inside sled, no indexes) is upgraded in place on open;
//! schema 2 (a file per blob) by [`Blobs::open`] taking the files into packs;
//! schema 4 and older (a key per message and per event) by folding them into
//! chunks. sled holds a page-table entry per leaf in memory and splits
//! leaves by their number of keys, so a store's memory follows its key count:
//! chunks took a daemon over 170,000 tickets from 5 keys of records a ticket to 2.

use super::blobs::Blobs;
use super::{
    Backup, Change, Count, HookEntry, IdEntry, Lane, MAX_PAGE, Op, OutboxEntry, OutboxKey, Page, Position,
    QuarantineEntry, ReportTicket, Store, StoreError, StoreSettings, TicketFilter, Timer,
};
use super::{status_number as status_byte, status_of_number as status_of_byte};
use crate::core::model::{Event, MessageRecord, Status, Ticket, TicketId};
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

/// A record that is a version byte then JSON.
const RECORD_VERSION: u8 = 1;
/// A record that is a version byte then its JSON as an LZ4 block (its size
/// prepended) compressed against [`DICT`].
const RECORD_LZ4: u8 = 2;
/// Records shorter than this are kept as JSON.
const COMPRESS_FROM: usize = 64;
/// What compressed records refer to: the shapes of tickets, messages, events
/// and outbox entries, and words mail is full of. Frozen: records written
/// against it must stay readable (a test pins its digest); a new dictionary
/// takes a new record version.
const DICT: &[u8] = include_bytes!("records.dict");

/// The layout this code writes; older layouts are upgraded on open. Layout 4
/// adds compressed records and blobs, which an older postdesk cannot read;
/// from 3 nothing is rewritten (both kinds stay readable). Layout 5 keeps a
/// ticket's messages and events a chunk of up to 16 to a key (from 4 and
/// older, they are folded on open).
pub const SCHEMA: u64 = 5;

/// Blobs younger than this are never swept (mail being processed names them soon).
const SWEEP_GRACE_SECS: u64 = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(usize)]
enum T {
    Meta,
    Tickets,
    Messages,
    Events,
    MsgIds,
    Hashes,
    Sources,
    Positions,
    Outbox,
    Quarantine,
    Acks,
    Suppress,
    Loads,
    Due,
    Ix,
    Counts,
    Activity,
    BlobRefs,
    Hooks,
}

const TREES: [&str; 19] = [
    "meta",
    "tickets",
    "messages",
    "events",
    "msgids",
    "hashes",
    "sources",
    "positions",
    "outbox",
    "quarantine",
    "acks",
    "suppress",
    "loads",
    "due",
    "ix",
    "counts",
    "activity",
    "blobrefs",
    "hooks",
];

/// The sled store.
#[derive(Clone)]
pub struct SledStore {
    /// The folder the store and the blob packs are in.
    data_dir: std::path::PathBuf,
    db: sled::Db,
    trees: Vec<sled::Tree>,
    blobs: Blobs,
    /// Added to sled's id generator (which a compacted store starts again at 0).
    seq_base: u64,
    /// The layout this open upgraded the store from (none when it was current or new).
    upgraded_from: Option<u64>,
    /// The first I/O error a write met ([`Store::failed`]).
    failed: std::sync::OnceLock<String>,
    /// Held to read by every write (commits, blobs, sweeps, pruning) and to
    /// write by [`Store::backup`], which so copies the store at one moment.
    quiet: std::sync::Arc<std::sync::RwLock<()>>,
    /// Set by [`Store::stop`]: a backup's copy gives up.
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SledStore")
    }
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_u64(v: &[u8]) -> u64 {
    u64::from_be_bytes(v.try_into().unwrap_or([0; 8]))
}

/// The key byte after the ticket of its open chunk of messages or events.
const TAIL: u8 = 0xFF;
/// The key byte after the ticket of a full chunk (then the sequence number
/// drawn by the record that closed it, so chunks sort in the order they filled).
const SEALED: u8 = b'c';
/// A chunk is closed when it holds this many records...
const CHUNK_RECORDS: usize = 16;
/// ...or when the next record would take it past this many bytes (a bound on
/// what each append rewrites).
const CHUNK_BYTES: usize = 8 * 1024;

/// The key of a ticket's open chunk.
fn tail_key(ticket: TicketId) -> [u8; 9] {
    let mut k = [TAIL; 9];
    k[..8].copy_from_slice(&be(ticket.0));
    k
}

/// The key of a ticket's full chunk, closed by the record numbered `seq`.
fn sealed_key(ticket: TicketId, seq: u64) -> Vec<u8> {
    let mut k = be(ticket.0).to_vec();
    k.push(SEALED);
    k.extend_from_slice(&be(seq));
    k
}

/// The length of a key of layout 4 and older under `messages` and `events`:
/// the ticket, then the record's sequence number.
const LEGACY_KEY: usize = 16;

/// Whether a chunk of `records` records and `bytes` bytes is closed before
/// a record of `next` bytes is added (the appends and the fold share it).
fn chunk_full(records: usize, bytes: usize, next: usize) -> bool {
    records > 0 && (records >= CHUNK_RECORDS || bytes + 4 + next > CHUNK_BYTES)
}

/// Adds one record to a chunk: its length (4 bytes, big-endian), then its bytes.
fn chunk_push(chunk: &mut Vec<u8>, record: &[u8]) {
    chunk.extend_from_slice(&(record.len() as u32).to_be_bytes());
    chunk.extend_from_slice(record);
}

/// The records under one key of `messages` or `events`: a chunk's, or the
/// one bare record of a key of layout 4 and older (ticket, then sequence
/// number: 16 bytes).
fn chunk_records<'a>(tree: &'static str, key: &[u8], value: &'a [u8]) -> Result<Vec<&'a [u8]>, StoreError> {
    if key.len() == LEGACY_KEY {
        return Ok(vec![value]);
    }
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize);
        match len.and_then(|len| rest.get(4..4 + len)) {
            Some(record) => {
                out.push(record);
                rest = &rest[4 + record.len()..];
            }
            None => {
                return Err(StoreError::Corrupt {
                    tree,
                    message: format!(
                        "a chunk of ticket {} ends inside a record",
                        read_u64(&key[..8.min(key.len())])
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// Appends `record` to ticket `ticket`'s open chunk in the transaction,
/// first closing the chunk (under [`sealed_key`] with `seq`) when it is full.
fn chunk_append<E>(
    tree: &TransactionalTree,
    ticket: TicketId,
    seq: u64,
    record: &[u8],
) -> Result<(), ConflictableTransactionError<E>> {
    let tail = tail_key(ticket);
    let mut chunk = tree.get(tail)?.map(|v| v.to_vec()).unwrap_or_default();
    // A chunk this code cannot read counts as full: it is kept as it is.
    let records = chunk_records("", &tail, &chunk).map_or(CHUNK_RECORDS, |r| r.len());
    if chunk_full(records, chunk.len(), record.len()) {
        tree.insert(sealed_key(ticket, seq), std::mem::take(&mut chunk))?;
    }
    chunk_push(&mut chunk, record);
    tree.insert(&tail[..], chunk)?;
    Ok(())
}

/// Seconds as a key that sorts negative times first.
fn time_key(at: Timestamp) -> [u8; 8] {
    ((at.as_second() as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_of_key(k: &[u8]) -> Option<Timestamp> {
    Timestamp::from_second((u64::from_be_bytes(k.try_into().ok()?) ^ (1 << 63)) as i64).ok()
}

fn day_key(at: Timestamp) -> [u8; 8] {
    ((at.as_second().div_euclid(86_400) as u64) ^ (1 << 63)).to_be_bytes()
}

fn due_key(t: &Timer) -> Vec<u8> {
    let mut k = time_key(t.at).to_vec();
    k.extend_from_slice(&be(t.ticket.0));
    k.push(t.kind);
    k
}

fn parse_due_key(k: &[u8]) -> Option<Timer> {
    if k.len() != 17 {
        return None;
    }
    Some(Timer {
        at: time_of_key(&k[..8])?,
        ticket: TicketId(read_u64(&k[8..16])),
        kind: k[16],
    })
}

fn outbox_key(k: OutboxKey) -> Vec<u8> {
    let mut v = vec![k.lane as u8];
    v.extend_from_slice(&be(k.seq));
    v
}

fn parse_outbox_key(k: &[u8]) -> Option<OutboxKey> {
    let lane = match k.first()? {
        0 => Lane::Live,
        1 => Lane::Bulk,
        _ => return None,
    };
    (k.len() == 9).then(|| OutboxKey {
        lane,
        seq: read_u64(&k[1..]),
    })
}

/// Index prefixes: one byte of kind, the value, a NUL; the ticket number follows.
fn ix_prefix(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(value);
    k.push(0);
    k
}

fn status_prefix(s: Status) -> Vec<u8> {
    vec![b's', status_byte(s)]
}

/// Every index key of a ticket.
fn ix_keys(t: &Ticket) -> Vec<Vec<u8>> {
    let id = be(t.id.0);
    let with = |mut p: Vec<u8>| {
        p.extend_from_slice(&id);
        p
    };
    let mut keys = vec![
        with(status_prefix(t.status)),
        with(ix_prefix(b'q', t.queue.as_bytes())),
        with(ix_prefix(b'r', t.requester.email.to_ascii_lowercase().as_bytes())),
    ];
    if let Some(a) = &t.assignee {
        keys.push(with(ix_prefix(b'a', a.as_bytes())));
    }
    let mut u = vec![b'u'];
    u.extend_from_slice(&time_key(t.updated_at));
    keys.push(with(u));
    keys
}

fn count_key(t: &Ticket) -> Vec<u8> {
    let mut k = vec![status_byte(t.status)];
    k.extend_from_slice(t.queue.as_bytes());
    k
}

fn counted_agent(t: &Ticket) -> Option<&str> {
    t.assignee.as_deref().filter(|_| t.is_active())
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, value).expect("records serialise");
    if out.len() > COMPRESS_FROM {
        let packed = lz4_flex::block::compress_prepend_size_with_dict(&out[1..], DICT);
        if packed.len() + 1 < out.len() {
            out.clear();
            out.push(RECORD_LZ4);
            out.extend_from_slice(&packed);
        }
    }
    out
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt { tree, message };
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => serde_json::from_slice(rest).map_err(|e| corrupt(e.to_string())),
        Some((&RECORD_LZ4, rest)) => {
            let json = super::blobs::unpack(rest, DICT).map_err(|e| corrupt(format!("a compressed record: {e}")))?;
            serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
        }
        Some((v, _)) => Err(StoreError::Corrupt {
            tree,
            message: format!("unknown record version {v}"),
        }),
        None => Err(StoreError::Corrupt {
            tree,
            message: "empty record".into(),
        }),
    }
}

fn encode_id_entry(entry: &IdEntry) -> Vec<u8> {
    let mut v = be(entry.ticket.0).to_vec();
    v.push(u8::from(entry.stored));
    if let Some(h) = &entry.hash {
        v.extend_from_slice(h.as_bytes());
    }
    v
}

fn ack_key(address: &str, at: Timestamp, seq: u64) -> Vec<u8> {
    let mut k = address.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&at.as_second().to_be_bytes());
    k.extend_from_slice(&be(seq));
    k
}

/// The address and seconds of an [`ack_key`]: address, NUL, seconds (8), sequence (8).
fn ack_of_key(k: &[u8]) -> Option<(&[u8], i64)> {
    let (address, rest) = k.split_at(k.len().checked_sub(17).filter(|&n| n > 0)?);
    Some((address, i64::from_be_bytes(rest[1..9].try_into().ok()?)))
}

/// Adds `delta` to a big-endian counter inside a transaction; zero removes it.
fn bump<E>(tree: &TransactionalTree, key: &[u8], delta: i64) -> Result<(), ConflictableTransactionError<E>> {
    let old = tree.get(key)?.map_or(0, |v| read_u64(&v));
    let new = (old as i64 + delta).max(0) as u64;
    if new == 0 {
        tree.remove(key)?;
    } else {
        tree.insert(key, &be(new))?;
    }
    Ok(())
}

/// Keeps a ticket's index keys, its (status, queue) counter and its
/// assignee's load in step with a change from `before` to `after`.
fn reindex<'a, E>(
    tx: &dyn Fn(T) -> &'a TransactionalTree,
    before: Option<&Ticket>,
    after: &Ticket,
) -> Result<(), ConflictableTransactionError<E>> {
    let old_keys = before.map(ix_keys).unwrap_or_default();
    let new_keys = ix_keys(after);
    for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
        tx(T::Ix).remove(k.as_slice())?;
    }
    for k in new_keys.iter().filter(|k| !old_keys.contains(k)) {
        tx(T::Ix).insert(k.as_slice(), &[])?;
    }
    let (old_count, new_count) = (before.map(count_key), count_key(after));
    if old_count.as_ref() != Some(&new_count) {
        if let Some(o) = &old_count {
            bump(tx(T::Counts), o, -1)?;
        }
        bump(tx(T::Counts), &new_count, 1)?;
    }
    let (old_agent, new_agent) = (before.and_then(counted_agent), counted_agent(after));
    if old_agent != new_agent {
        if let Some(o) = old_agent {
            bump(tx(T::Loads), o.as_bytes(), -1)?;
        }
        if let Some(n) = new_agent {
            bump(tx(T::Loads), n.as_bytes(), 1)?;
        }
    }
    Ok(())
}

/// Key of the activity index: the event's day, then the ticket.
fn activity_key(at: Timestamp, ticket: &[u8]) -> Vec<u8> {
    let mut k = day_key(at).to_vec();
    k.extend_from_slice(ticket);
    k
}

/// One change, with its sequence numbers drawn, ready for the transaction.
enum Prepared {
    Put(T, Vec<u8>, Vec<u8>),
    Remove(T, Vec<u8>),
    Ticket(Box<Ticket>),
    /// The ticket, the event's time, its sequence number and its record.
    Event(TicketId, Timestamp, u64, Vec<u8>),
    /// The ticket, the message's sequence number, its record and its blob.
    Message(TicketId, u64, Vec<u8>, Option<String>),
    Enqueue(Vec<u8>, Vec<u8>),
    Dequeue(Vec<u8>),
    Quarantine(Vec<u8>, Vec<u8>, String),
}

impl Prepared {
    fn trees(&self, out: &mut Vec<T>) {
        match self {
            Prepared::Put(t, ..) | Prepared::Remove(t, _) => out.push(*t),
            Prepared::Ticket(_) => out.extend([T::Tickets, T::Ix, T::Counts, T::Loads]),
            Prepared::Event(..) => out.extend([T::Events, T::Activity]),
            Prepared::Message(..) => out.extend([T::Messages, T::BlobRefs]),
            Prepared::Enqueue(..) | Prepared::Dequeue(_) => out.extend([T::Outbox, T::Meta]),
            Prepared::Quarantine(..) => out.extend([T::Quarantine, T::BlobRefs]),
        }
    }
}

/// Where [`SledStore::compact`] writes the new store, and where the old one goes meanwhile.
const COMPACT_COPY: &str = "store.compact";
const COMPACT_OLD: &str = "store.old";
/// The cache of each store while [`SledStore::compact`] copies.
const COMPACT_CACHE: u64 = 4 << 20;
/// How many times [`after_lock`] looks again, 50 ms apart, for a store another holds.
const COMPACT_LOCK_TRIES: u32 = 40;
/// How many records [`SledStore::compact`] copies between flushes.
const COMPACT_FLUSH_EVERY: usize = 4 * 1024;
/// sled splits a leaf of more than 16 entries into its first 9 and the rest.
const LEAF_MAX: usize = 16;
const LEAF_LEFT: usize = 9;

/// Hands records given in key order on in an order that leaves sled's leaves
/// full. In key order each split leaves 9 entries behind for good, so leaves
/// hold 9 of their 16; here each run of 16 goes in as 9, then 8 of the next
/// run (the leaf splits: the 9 stay on the left), then the 7 held back (the
/// left leaf is full), then the next run's ninth. Fewer pages: a smaller
/// store, and less of sled's page table in memory.
#[derive(Default)]
struct FillOrder {
    /// The run being read.
    run: Vec<(sled::IVec, sled::IVec)>,
    /// The last 7 of the previous run, for its leaf once it has split
    /// (none before the first run).
    held: Vec<(sled::IVec, sled::IVec)>,
}

impl FillOrder {
    /// Takes the next record; returns those to write now.
    fn push(&mut self, k: sled::IVec, v: sled::IVec, out: &mut Vec<(sled::IVec, sled::IVec)>) {
        self.run.push((k, v));
        if self.run.len() == LEAF_MAX {
            self.flush(out);
        }
    }

    fn flush(&mut self, out: &mut Vec<(sled::IVec, sled::IVec)>) {
        let mut run = std::mem::take(&mut self.run).into_iter();
        if self.held.is_empty() {
            out.extend(run.by_ref().take(LEAF_LEFT));
        } else {
            out.extend(run.by_ref().take(LEAF_LEFT - 1));
            out.append(&mut self.held);
            out.extend(run.next());
        }
        self.held.extend(run);
    }

    /// The rest, at the end of the tree.
    fn finish(mut self, out: &mut Vec<(sled::IVec, sled::IVec)>) {
        if !self.run.is_empty() {
            self.flush(out);
        }
        out.append(&mut self.held);
    }
}

/// The `meta` key of [`SledStore::next_id`]'s base.
const SEQ_BASE: &[u8] = b"seq_base";
/// The store's bytes right after its last compaction (in `meta`).
const COMPACTED_BYTES: &[u8] = b"compacted_bytes";
/// The daemon compacts sled at its start only from this size: smaller
/// stores cost too little disk to matter.
pub const COMPACT_AT_START_FROM: u64 = 1 << 20;

fn fs_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| {
        StoreError::Sled(sled::Error::Io(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        )))
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fs_error(dir))
}

/// `open`, looked at again for two seconds while the store is locked: sled's
/// writer threads may hold the file a moment after the store that ran them
/// was dropped (right after an `ingest`, or the daemon's look at the store
/// at its start). Another process holding it longer still gives
/// [`StoreError::Locked`].
pub fn after_lock<S>(mut open: impl FnMut() -> Result<S, StoreError>) -> Result<S, StoreError> {
    let mut tries = 0;
    loop {
        match open() {
            Err(StoreError::Locked(_)) if tries < COMPACT_LOCK_TRIES => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Whether `free` bytes leave room to rewrite a store of `bytes` beside it:
/// the copy is at most the store's size, and a tenth of it (64 MiB at
/// least) stays free.
fn room_to_compact(bytes: u64, free: u64) -> bool {
    free >= bytes.saturating_add((bytes / 10).max(64 << 20))
}

/// The bytes of the sled store under `data_dir` (its files; 0 before it exists).
pub fn store_bytes(data_dir: &Path) -> u64 {
    files_bytes(&data_dir.join("store"))
}

/// The bytes of the blob packs under `data_dir`.
pub fn blob_bytes(data_dir: &Path) -> u64 {
    files_bytes(&data_dir.join("blobs"))
}

/// The bytes of the files in a folder and the folders in it (0 when there is
/// none): sled keeps a value too large for its log as a file of its own, in
/// the store's `blobs/` (a message record with a long text).
fn files_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |dir| {
        dir.filter_map(|e| {
            let e = e.ok()?;
            let kind = e.file_type().ok()?;
            if kind.is_dir() {
                Some(files_bytes(&e.path()))
            } else {
                kind.is_file().then(|| e.metadata().ok().map(|m| m.len())).flatten()
            }
        })
        .sum()
    })
}

/// Copies the files under `from` into the new folder `to`, durable on
/// return. A file gone meanwhile is left out: under a backup's lock only a
/// snapshot of sled's page table, which its next snapshot replaced, can go
/// (a snapshot saves replaying the log, which holds everything; one
/// unfinished is dropped on open). Gives up with [`StoreError::Stopping`]
/// once `stopping` is set, looking at it every [`COPY_STEP`] bytes.
fn copy_files(from: &Path, to: &Path, stopping: &std::sync::atomic::AtomicBool) -> Result<(), StoreError> {
    let stopped = || {
        stopping
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(StoreError::Stopping("the backup was given up"))
    };
    std::fs::create_dir(to).map_err(fs_error(to))?;
    for e in std::fs::read_dir(from).map_err(fs_error(from))? {
        let e = e.map_err(fs_error(from))?;
        let (path, copy) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type().map_err(fs_error(&path))?;
        if kind.is_dir() {
            copy_files(&path, &copy, stopping)?;
        } else if kind.is_file() {
            let mut source = match std::fs::File::open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                opened => opened.map_err(fs_error(&path))?,
            };
            let mut target = std::fs::File::create_new(&copy).map_err(fs_error(&copy))?;
            // In steps, each still the kernel's copy (std::io::copy of one
            // file into another), so that a stop need not wait for a large file.
            loop {
                if let Some(e) = stopped() {
                    return Err(e);
                }
                let n = std::io::copy(&mut std::io::Read::take(&mut source, COPY_STEP), &mut target)
                    .map_err(fs_error(&path))?;
                if n == 0 {
                    break;
                }
            }
            target.sync_all().map_err(fs_error(&copy))?;
        }
    }
    sync_dir(to)
}

/// How much of a file a backup copies between two looks at whether the
/// process is stopping (a tenth of a second or less on a disk of today).
const COPY_STEP: u64 = 32 << 20;

/// Removes the snapshots sled left unfinished beside the store
/// (`snap.*.generating`), holding the store's lock.
///
/// sled 0.34 writes a snapshot of its page table as it opens a store (and
/// now and then), to a `.generating` file renamed into place once whole and
/// synced. But on open it reads the newest `snap.` file, finished or not: a
/// snapshot that a full disk cut short (an empty file, seen on a store whose
/// last write had failed for want of space) or a crash interrupted fails
/// every later open with "Read corrupted data", space or no space. A snapshot
/// only saves replaying the log, which holds everything; and the previous
/// whole snapshot is removed only after the next one is in place. So the
/// store opens without the unfinished one as it was before it was begun.
/// The lock is sled's own (an exclusive `flock` on `db`, held while a
/// process has the store open): taken, no one is writing a snapshot; not
/// taken, nothing is removed and sled's open says the store is in use.
fn drop_unfinished_snapshots(store: &Path) -> Result<(), StoreError> {
    let db = match std::fs::File::open(store.join("db")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fs_error(&store.join("db"))(e)),
    };
    if rustix::fs::flock(&db, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Ok(());
    }
    let mut dropped = false;
    for entry in std::fs::read_dir(store).map_err(fs_error(store))? {
        let path = entry.map_err(fs_error(store))?.path();
        let unfinished = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"));
        if unfinished {
            tracing::warn!(
                file = %path.display(),
                "removing a snapshot of the store that sled left unfinished (a full disk or a crash cut it short); the store opens from its log"
            );
            std::fs::remove_file(&path).map_err(fs_error(&path))?;
            dropped = true;
        }
    }
    if dropped {
        sync_dir(store)?;
    }
    Ok(())
}

/// Finishes or drops a compaction a crash interrupted. The new store is
/// renamed into place only after it is complete, and the old one moved
/// aside only then: a copy beside the store is unfinished (dropped); a
/// copy beside the old store without a store is complete (swapped in).
fn finish_compaction(data_dir: &Path) -> Result<(), StoreError> {
    let (path, copy, old) = (
        data_dir.join("store"),
        data_dir.join(COMPACT_COPY),
        data_dir.join(COMPACT_OLD),
    );
    if copy.exists() {
        if !path.exists() && old.exists() {
            tracing::info!("finishing an interrupted compaction of the store");
            std::fs::rename(&copy, &path).map_err(fs_error(&copy))?;
            sync_dir(data_dir)?;
        } else {
            tracing::info!("dropping an unfinished compaction of the store");
            std::fs::remove_dir_all(&copy).map_err(fs_error(&copy))?;
        }
    }
    if old.exists() && path.exists() {
        std::fs::remove_dir_all(&old).map_err(fs_error(&old))?;
    }
    Ok(())
}

impl SledStore {
    /// Opens (or creates) the store under `data_dir`, upgrading an older layout.
    pub fn open(data_dir: &Path, settings: &StoreSettings) -> Result<SledStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        finish_compaction(data_dir)?;
        let path = data_dir.join("store");
        drop_unfinished_snapshots(&path)?;
        let db = match sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .cache_capacity(settings.cache_bytes)
            .open()
        {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") => {
                return Err(StoreError::Locked(path.display().to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let trees = TREES.iter().map(|n| db.open_tree(n)).collect::<Result<Vec<_>, _>>()?;
        let seq_base = trees[T::Meta as usize].get(SEQ_BASE)?.map_or(0, |v| read_u64(&v));
        let store = SledStore {
            data_dir: data_dir.to_path_buf(),
            trees,
            blobs: Blobs::open(&data_dir.join("blobs"), db.open_tree("blobs")?)?,
            db,
            seq_base,
            upgraded_from: None,
            failed: std::sync::OnceLock::new(),
            quiet: Default::default(),
            stopping: Default::default(),
        };
        let from = store.upgrade()?;
        Ok(SledStore {
            upgraded_from: from,
            ..store
        })
    }

    fn tree(&self, name: T) -> &sled::Tree {
        &self.trees[name as usize]
    }

    /// The read side of `quiet`, taken by every write: a backup waits for
    /// the writes under way, and the writes after wait for the backup.
    fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.quiet.read().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Store::commit`] of a change that is not empty, in one transaction.
    fn commit_now(&self, change: Change) -> Result<(), StoreError> {
        let prepared = self.prepare(change)?;
        // Only the trees this change touches take part in the transaction.
        let mut used = Vec::new();
        for p in &prepared {
            p.trees(&mut used);
        }
        used.sort_unstable();
        used.dedup();
        let refs: Vec<&sled::Tree> = used.iter().map(|&t| self.tree(t)).collect();
        let result: Result<(), TransactionError<StoreErrorBox>> = refs.as_slice().transaction(|trees| {
            let tx = |t: T| -> &TransactionalTree {
                &trees[used.binary_search(&t).expect("the tree is in the transaction")]
            };
            for p in &prepared {
                apply(p, &tx)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(StoreErrorBox(tree, message))) => Err(StoreError::Corrupt { tree, message }),
        }
    }

    /// Keeps a write's I/O error for [`Store::failed`]: sled 0.34 keeps the
    /// first one for good, every later write failing with it (a full disk
    /// made room again or not) until the store is opened again.
    fn noting<R>(&self, result: Result<R, StoreError>) -> Result<R, StoreError> {
        if let Err(StoreError::Sled(sled::Error::Io(e))) = &result {
            let _ = self.failed.set(e.to_string());
        }
        result
    }

    /// The next number of the store's sequence (message, event and outbox
    /// order), above every number given before, compactions included.
    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.seq_base + self.db.generate_id()?)
    }

    /// Rewrites the sled store under `data_dir` into a fresh one, every tree
    /// with full leaves (in the order of `FillOrder`), and swaps it in. sled's log keeps old versions of pages
    /// that updates scattered over many nodes (hash-keyed indexes) leave
    /// behind; a backfill leaves it three to five times what it holds, the
    /// rewrite about twice. The store must not be open elsewhere
    /// ([`StoreError::Locked`] after two seconds of looking again). A crash at any point leaves the old
    /// store or the new one whole; [`SledStore::open`] finishes or drops an
    /// interrupted rewrite. It is not tried without room for the copy beside
    /// the store (an error naming what is free). Returns the store's bytes
    /// before and after.
    pub fn compact(data_dir: &Path, settings: &StoreSettings) -> Result<(u64, u64), StoreError> {
        Ok(Self::compact_when(data_dir, settings, |_, _| true)?.expect("compacts unconditionally"))
    }

    /// [`SledStore::compact`] at the daemon's start, when the store has grown
    /// to twice its size after its last compaction (and to at least
    /// [`COMPACT_AT_START_FROM`]; a store never compacted counts from 0): the
    /// pages a daemon updates leave their old versions in sled's log. `None`
    /// when it has not grown so much.
    pub fn compact_if_grown(data_dir: &Path, settings: &StoreSettings) -> Result<Option<(u64, u64)>, StoreError> {
        if store_bytes(data_dir) < COMPACT_AT_START_FROM {
            return Ok(None);
        }
        Self::compact_when(data_dir, settings, |now, last| {
            now >= COMPACT_AT_START_FROM.max(2 * last.unwrap_or(0))
        })
    }

    /// [`SledStore::compact`] when `wanted(bytes now, bytes after the last
    /// compaction)` says so, decided with the store open (so nothing else
    /// writes to it meanwhile).
    fn compact_when(
        data_dir: &Path,
        settings: &StoreSettings,
        wanted: impl FnOnce(u64, Option<u64>) -> bool,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let path = data_dir.join("store");
        let copy = data_dir.join(COMPACT_COPY);
        let old = data_dir.join(COMPACT_OLD);
        let before = store_bytes(data_dir);
        // Each record is read and written once: a small cache does.
        let settings = &StoreSettings {
            cache_bytes: settings.cache_bytes.min(COMPACT_CACHE),
            ..settings.clone()
        };
        {
            let store = after_lock(|| SledStore::open(data_dir, settings))?;
            let last = store.compacted_bytes()?;
            let now = store_bytes(data_dir);
            if !wanted(now, last) {
                return Ok(None);
            }
            // The copy needs room beside the store: filling the disk would
            // fail other writers too (an MTA delivering to a Maildir).
            let stat = rustix::fs::statvfs(&path).map_err(|e| fs_error(&path)(e.into()))?;
            let free = stat.f_bavail.saturating_mul(stat.f_frsize);
            if !room_to_compact(now, free) {
                return Err(fs_error(&path)(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "{} MB free, too little to rewrite a store of {} MB beside it",
                        free / 1_000_000,
                        now / 1_000_000
                    ),
                )));
            }
            if copy.exists() {
                std::fs::remove_dir_all(&copy).map_err(fs_error(&copy))?;
            }
            store.write_copy(&copy, settings.cache_bytes)?;
            // Still holding the old store, so nothing writes to it past the copy.
            std::fs::rename(&path, &old).map_err(fs_error(&path))?;
            std::fs::rename(&copy, &path).map_err(fs_error(&copy))?;
            sync_dir(data_dir)?;
        }
        match std::fs::remove_dir_all(&old) {
            // Another process's open may have removed it meanwhile.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fs_error(&old)(e)),
            _ => {}
        }
        Ok(Some((before, store_bytes(data_dir))))
    }

    /// Writes every record of this store into a new sled store at `copy`
    /// (which must not exist), every tree with full leaves in the order of
    /// `FillOrder`, durable on return. Nothing may write to this store meanwhile.
    fn write_copy(&self, copy: &Path, cache_bytes: u64) -> Result<(), StoreError> {
        let new = sled::Config::new()
            .path(copy)
            .flush_every_ms(None)
            .cache_capacity(cache_bytes)
            .open()?;
        for name in self.db.tree_names() {
            let (from, to) = (self.db.open_tree(&name)?, new.open_tree(&name)?);
            let mut order = FillOrder::default();
            let mut ready = Vec::new();
            let mut n = 0;
            let mut write = |ready: &mut Vec<(sled::IVec, sled::IVec)>| -> Result<(), StoreError> {
                for (k, v) in ready.drain(..) {
                    to.insert(k, v)?;
                    n += 1;
                    // Written pages leave the cache once on disk: memory stays bounded.
                    if n % COMPACT_FLUSH_EVERY == 0 {
                        new.flush()?;
                    }
                }
                Ok(())
            };
            for r in from.iter() {
                let (k, v) = r?;
                order.push(k, v, &mut ready);
                write(&mut ready)?;
            }
            order.finish(&mut ready);
            write(&mut ready)?;
        }
        // The new generator starts at 0: numbers go on from the old one's.
        let meta = new.open_tree("meta")?;
        meta.insert(SEQ_BASE, &be(self.next_id()? + 1))?;
        new.flush()?;
        // What the next `compact_if_grown` measures growth against.
        meta.insert(COMPACTED_BYTES, &be(files_bytes(copy)))?;
        new.flush()?;
        drop((meta, new));
        sync_dir(copy)
    }

    /// The layout version on disk: 1 when unmarked but not empty.
    pub fn schema(&self) -> Result<u64, StoreError> {
        Ok(match self.tree(T::Meta).get(b"schema")? {
            Some(v) => read_u64(&v),
            None if self.tree(T::Tickets).is_empty() && self.tree(T::Quarantine).is_empty() => 0,
            None => 1,
        })
    }

    /// Brings an older layout to [`SCHEMA`]: raw mail from the `raw` tree
    /// to blob files, the indexes, counters and loads built from the tickets,
    /// the activity index from the events, outbox keys given a lane. Each step
    /// can run again after a crash; the version is written last.
    /// Returns the layout it upgraded from, if it did.
    fn upgrade(&self) -> Result<Option<u64>, StoreError> {
        let from = self.schema()?;
        if from == SCHEMA {
            return Ok(None);
        }
        if from > SCHEMA {
            return Err(StoreError::Corrupt {
                tree: "meta",
                message: format!("the store has layout {from}, newer than this postdesk ({SCHEMA}): upgrade postdesk"),
            });
        }
        if from >= 1 {
            tracing::info!(from, to = SCHEMA, "upgrading the store layout");
        }
        if from == 1 {
            self.upgrade_from_1()?;
        }
        if (1..5).contains(&from) {
            self.fold_children(T::Messages, "messages")?;
            self.fold_children(T::Events, "events")?;
        }
        self.tree(T::Meta).insert(b"schema", &be(SCHEMA))?;
        self.db.flush()?;
        Ok((from > 0).then_some(from))
    }

    /// The layout this open upgraded the store from, when it was older.
    pub fn upgraded_from(&self) -> Option<u64> {
        self.upgraded_from
    }

    /// Layout 4 and older kept each message and event under its own key
    /// (ticket, sequence number); from layout 5 a ticket's records share
    /// chunks (see [`chunk_append`]). Rewrites the tickets that still have
    /// such keys, a group of tickets per atomic batch, so a crash leaves each
    /// ticket in one layout or the other and a second run finishes the rest.
    fn fold_children(&self, tree: T, name: &'static str) -> Result<(), StoreError> {
        const TICKETS_PER_BATCH: usize = 1024;
        type Group = (TicketId, Vec<sled::IVec>, Vec<(u64, Vec<u8>)>);
        let records = self.tree(tree);
        let mut from: Vec<u8> = Vec::new();
        let mut folded = 0usize;
        loop {
            let mut batch = sled::Batch::default();
            // Each ticket's keys, and its records in order with their sequence numbers.
            let mut group: Option<Group> = None;
            let mut groups = 0;
            let mut next = None;
            let flush = |g: Group, batch: &mut sled::Batch| {
                let (id, keys, recs) = g;
                if !keys.iter().any(|k| k.len() == LEGACY_KEY) {
                    return 0;
                }
                for k in keys {
                    batch.remove(k);
                }
                // Full chunks as the appends would have left them, the rest open.
                let mut chunk = Vec::new();
                let mut count = 0;
                for (seq, r) in &recs {
                    if chunk_full(count, chunk.len(), r.len()) {
                        batch.insert(sealed_key(id, *seq), std::mem::take(&mut chunk));
                        count = 0;
                    }
                    chunk_push(&mut chunk, r);
                    count += 1;
                }
                if !chunk.is_empty() {
                    batch.insert(&tail_key(id)[..], chunk);
                }
                1
            };
            for r in records.range(from.clone()..) {
                let (k, v) = r?;
                let id = TicketId(read_u64(&k[..8.min(k.len())]));
                if group.as_ref().is_some_and(|g| g.0 != id) {
                    if groups >= TICKETS_PER_BATCH {
                        next = Some(be(id.0).to_vec());
                        break;
                    }
                    folded += flush(group.take().expect("checked"), &mut batch);
                }
                let g = group.get_or_insert_with(|| {
                    groups += 1;
                    (id, Vec::new(), Vec::new())
                });
                for r in chunk_records(name, &k, &v)? {
                    // A record of the old layout has its own number; one already in a chunk follows the last.
                    let seq = match k.len() {
                        LEGACY_KEY => read_u64(&k[8..]),
                        _ => g.2.last().map_or(0, |(s, _)| s + 1),
                    };
                    g.2.push((seq, r.to_vec()));
                }
                g.1.push(k);
            }
            if let Some(g) = group.take() {
                folded += flush(g, &mut batch);
            }
            records.apply_batch(batch)?;
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        if folded > 0 {
            tracing::info!(
                tree = name,
                tickets = folded,
                "records folded into chunks (`postdesk compact`, with the daemon stopped, gives the old records' space back)"
            );
        }
        Ok(())
    }

    fn upgrade_from_1(&self) -> Result<(), StoreError> {
        // Raw mail: to blobs, in batches, durable before the tree entry goes.
        if self.db.tree_names().iter().any(|n| n.as_ref() == b"raw") {
            let raw = self.db.open_tree("raw")?;
            loop {
                let batch: Vec<(sled::IVec, sled::IVec)> = raw.iter().take(256).collect::<Result<_, _>>()?;
                if batch.is_empty() {
                    break;
                }
                let bytes: Vec<&[u8]> = batch.iter().map(|(_, v)| v.as_ref()).collect();
                let keys = self.blobs.put_all(&bytes)?;
                for ((old, _), key) in batch.iter().zip(&keys) {
                    if old.as_ref() != key.as_bytes() {
                        tracing::warn!(key = %String::from_utf8_lossy(old), "raw mail whose key is not its hash; kept under its hash");
                    }
                    self.tree(T::BlobRefs).insert(key.as_bytes(), &[])?;
                    self.tree(T::BlobRefs).insert(old.as_ref(), &[])?;
                    raw.remove(old)?;
                }
                self.db.flush()?;
            }
            self.db.drop_tree("raw")?;
        }
        for t in [T::Ix, T::Counts, T::Loads, T::Activity] {
            self.tree(t).clear()?;
        }
        let trees = [self.tree(T::Ix), self.tree(T::Counts), self.tree(T::Loads)];
        for r in self.tree(T::Tickets).iter() {
            let (_, v) = r?;
            let t: Ticket = decode("tickets", &v)?;
            let result: Result<(), TransactionError<()>> = trees.as_slice().transaction(|tx| {
                let by_name = |name: T| -> &TransactionalTree {
                    match name {
                        T::Ix => &tx[0],
                        T::Counts => &tx[1],
                        _ => &tx[2],
                    }
                };
                reindex(&by_name, None, &t)
            });
            match result {
                Ok(()) => {}
                Err(TransactionError::Storage(e)) => return Err(e.into()),
                Err(TransactionError::Abort(())) => unreachable!("reindexing never aborts"),
            }
        }
        for r in self.tree(T::Events).iter() {
            let (k, v) = r?;
            let e: Event = decode("events", &v)?;
            self.tree(T::Activity).insert(activity_key(e.at, &k[..8]), &[])?;
        }
        // Outbox keys were a bare sequence number; they join the live lane.
        let outbox = self.tree(T::Outbox);
        let old: Vec<(sled::IVec, sled::IVec)> = outbox
            .iter()
            .filter(|r| r.as_ref().map_or(true, |(k, _)| k.len() == 8))
            .collect::<Result<_, _>>()?;
        for (k, v) in old {
            outbox.insert(
                outbox_key(OutboxKey {
                    lane: Lane::Live,
                    seq: read_u64(&k),
                }),
                v,
            )?;
            outbox.remove(k)?;
        }
        self.tree(T::Meta).insert(b"outbox_len", &be(outbox.len() as u64))?;
        Ok(())
    }

    /// Every record as the writes that recreate it in another store, in
    /// changes of up to `batch` writes: meta, tickets, messages, events, the
    /// indexes, positions, outbox, quarantine, rate-limit records and timers.
    /// Blobs go separately ([`SledStore::each_blob`]). Returns what was read.
    pub fn dump(
        &self,
        batch: usize,
        f: &mut dyn FnMut(Change) -> Result<(), StoreError>,
    ) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut counts: Vec<(&'static str, u64)> = Vec::new();
        let mut change = Change::default();
        let mut emit = |op: Op, change: &mut Change| -> Result<(), StoreError> {
            change.push(op);
            if change.ops.len() >= batch {
                f(std::mem::take(change))?;
            }
            Ok(())
        };
        let mut n = 0;
        for r in self.tree(T::Tickets).iter() {
            let (_, v) = r?;
            emit(Op::Ticket(Box::new(decode("tickets", &v)?)), &mut change)?;
            n += 1;
        }
        counts.push(("tickets", n));
        for (tree, name) in [(T::Messages, "messages"), (T::Events, "events")] {
            let mut n = 0;
            for r in self.tree(tree).iter() {
                let (k, v) = r?;
                let id = TicketId(read_u64(&k[..8.min(k.len())]));
                for record in chunk_records(name, &k, &v)? {
                    let op = if tree == T::Messages {
                        Op::Message(id, Box::new(decode(name, record)?))
                    } else {
                        Op::Event(id, Box::new(decode(name, record)?))
                    };
                    emit(op, &mut change)?;
                    n += 1;
                }
            }
            counts.push((name, n));
        }
        let mut n = 0;
        for r in self.tree(T::MsgIds).iter() {
            let (k, _) = r?;
            let id = String::from_utf8_lossy(&k).into_owned();
            if let Some(entry) = self.message_id(&id)? {
                emit(Op::MessageId(id, entry), &mut change)?;
                n += 1;
            }
        }
        counts.push(("message_ids", n));
        let mut n = 0;
        for r in self.tree(T::Hashes).iter().keys() {
            emit(Op::Hash(String::from_utf8_lossy(&r?).into_owned()), &mut change)?;
            n += 1;
        }
        counts.push(("hashes", n));
        let mut n = 0;
        for r in self.tree(T::Sources).iter() {
            let (k, v) = r?;
            let op = Op::Source(
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
            emit(op, &mut change)?;
            n += 1;
        }
        counts.push(("sources", n));
        let mut n = 0;
        for r in self.tree(T::Positions).iter() {
            let (k, v) = r?;
            emit(
                Op::Position(String::from_utf8_lossy(&k).into_owned(), decode("positions", &v)?),
                &mut change,
            )?;
            n += 1;
        }
        counts.push(("positions", n));
        let mut n = 0;
        for r in self.tree(T::Outbox).iter() {
            let (k, v) = r?;
            if let Some(key) = parse_outbox_key(&k) {
                emit(Op::Enqueue(key.lane, Box::new(decode("outbox", &v)?)), &mut change)?;
                n += 1;
            }
        }
        counts.push(("outbox", n));
        let mut n = 0;
        for r in self.tree(T::Quarantine).iter() {
            let (_, v) = r?;
            emit(Op::Quarantine(Box::new(decode("quarantine", &v)?)), &mut change)?;
            n += 1;
        }
        counts.push(("quarantine", n));
        let mut n = 0;
        for r in self.tree(T::Hooks).iter() {
            let (_, v) = r?;
            emit(Op::Hook(Box::new(decode("hooks", &v)?)), &mut change)?;
            n += 1;
        }
        counts.push(("webhooks", n));
        for r in self.tree(T::Acks).iter().keys() {
            let k = r?;
            if let Some((address, at)) = ack_of_key(&k)
                && let Ok(at) = Timestamp::from_second(at)
            {
                emit(Op::Ack(String::from_utf8_lossy(address).into_owned(), at), &mut change)?;
            }
        }
        for r in self.tree(T::Suppress).iter() {
            let (k, v) = r?;
            emit(
                Op::Suppress(String::from_utf8_lossy(&k).into_owned(), decode("suppress", &v)?),
                &mut change,
            )?;
        }
        let mut n = 0;
        for r in self.tree(T::Due).iter().keys() {
            if let Some(t) = parse_due_key(&r?) {
                emit(Op::AddTimer(t), &mut change)?;
                n += 1;
            }
        }
        counts.push(("timers", n));
        for r in self.tree(T::Meta).iter() {
            let (k, v) = r?;
            if let Some(queue) = k.strip_prefix(b"rr:") {
                emit(
                    Op::RoundRobin(
                        String::from_utf8_lossy(queue).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    ),
                    &mut change,
                )?;
            }
        }
        let next = self.next_ticket_id()?;
        if next.0 > 1 {
            emit(Op::NextTicket(next), &mut change)?;
        }
        if !change.is_empty() {
            f(change)?;
        }
        Ok(counts)
    }

    /// Every blob's key and bytes.
    pub fn each_blob(&self, mut f: impl FnMut(String, Vec<u8>) -> Result<(), StoreError>) -> Result<(), StoreError> {
        self.blobs.each(|key| match self.blobs.get(key)? {
            Some(bytes) => f(key.to_string(), bytes),
            None => Ok(()),
        })
    }

    /// A ticket's record, decoded as `V` (the whole ticket, or part of it).
    fn ticket_record<V: DeserializeOwned>(&self, id: TicketId) -> Result<Option<V>, StoreError> {
        self.tree(T::Tickets)
            .get(be(id.0))?
            .map(|v| decode("tickets", &v))
            .transpose()
    }

    fn children<V: DeserializeOwned>(&self, tree: T, name: &'static str, id: TicketId) -> Result<Vec<V>, StoreError> {
        let mut out = Vec::new();
        for r in self.tree(tree).scan_prefix(be(id.0)) {
            let (k, v) = r?;
            for record in chunk_records(name, &k, &v)? {
                out.push(decode(name, record)?);
            }
        }
        Ok(out)
    }

    fn prepare(&self, change: Change) -> Result<Vec<Prepared>, StoreError> {
        let mut out = Vec::with_capacity(change.ops.len());
        for op in change.ops {
            out.push(match op {
                Op::Ticket(t) => Prepared::Ticket(t),
                Op::Message(id, m) => {
                    let blob = m.raw_key.clone();
                    Prepared::Message(id, self.next_id()?, encode(&*m), blob)
                }
                Op::Event(id, e) => Prepared::Event(id, e.at, self.next_id()?, encode(&*e)),
                Op::MessageId(mid, entry) => Prepared::Put(T::MsgIds, mid.into_bytes(), encode_id_entry(&entry)),
                Op::Hash(h) => Prepared::Put(T::Hashes, h.into_bytes(), Vec::new()),
                Op::Source(key, raw) => Prepared::Put(T::Sources, key.into_bytes(), raw.into_bytes()),
                Op::Position(mailbox, p) => Prepared::Put(T::Positions, mailbox.into_bytes(), encode(&p)),
                Op::Enqueue(lane, e) => Prepared::Enqueue(
                    outbox_key(OutboxKey {
                        lane,
                        seq: self.next_id()?,
                    }),
                    encode(&*e),
                ),
                Op::Requeue(k, e) => Prepared::Put(T::Outbox, outbox_key(k), encode(&*e)),
                Op::Dequeue(k) => Prepared::Dequeue(outbox_key(k)),
                Op::Quarantine(q) => {
                    let blob = q.raw_key.clone();
                    Prepared::Quarantine(be(self.next_id()?).to_vec(), encode(&*q), blob)
                }
                Op::Ack(address, at) => Prepared::Put(T::Acks, ack_key(&address, at, self.next_id()?), Vec::new()),
                Op::Suppress(address, until) => Prepared::Put(T::Suppress, address.into_bytes(), encode(&until)),
                Op::NextTicket(id) => Prepared::Put(T::Meta, b"next_ticket".to_vec(), be(id.0).to_vec()),
                Op::RoundRobin(queue, agent) => {
                    Prepared::Put(T::Meta, format!("rr:{queue}").into_bytes(), agent.into_bytes())
                }
                Op::AddTimer(t) => Prepared::Put(T::Due, due_key(&t), Vec::new()),
                Op::RemoveTimer(t) => Prepared::Remove(T::Due, due_key(&t)),
                Op::Hook(h) => Prepared::Put(T::Hooks, be(self.next_id()?).to_vec(), encode(&*h)),
                Op::HookUpdate(seq, h) => Prepared::Put(T::Hooks, be(seq).to_vec(), encode(&*h)),
                Op::HookDone(seq) => Prepared::Remove(T::Hooks, be(seq).to_vec()),
            });
        }
        Ok(out)
    }
}

/// Applies one prepared write inside the transaction; `tx(T)` gives a tree.
fn apply<'a>(
    p: &Prepared,
    tx: &dyn Fn(T) -> &'a TransactionalTree,
) -> Result<(), ConflictableTransactionError<StoreErrorBox>> {
    let corrupt = |message: String| ConflictableTransactionError::Abort(StoreErrorBox("tickets", message));
    match p {
        Prepared::Put(t, k, v) => {
            tx(*t).insert(k.as_slice(), v.as_slice())?;
        }
        Prepared::Remove(t, k) => {
            tx(*t).remove(k.as_slice())?;
        }
        Prepared::Event(id, at, seq, v) => {
            chunk_append(tx(T::Events), *id, *seq, v)?;
            tx(T::Activity).insert(activity_key(*at, &be(id.0)), &[])?;
        }
        Prepared::Message(id, seq, v, blob) => {
            chunk_append(tx(T::Messages), *id, *seq, v)?;
            if let Some(b) = blob {
                tx(T::BlobRefs).insert(b.as_bytes(), &[])?;
            }
        }
        Prepared::Quarantine(k, v, blob) => {
            tx(T::Quarantine).insert(k.as_slice(), v.as_slice())?;
            tx(T::BlobRefs).insert(blob.as_bytes(), &[])?;
        }
        Prepared::Enqueue(k, v) => {
            if tx(T::Outbox).insert(k.as_slice(), v.as_slice())?.is_none() {
                bump(tx(T::Meta), b"outbox_len", 1)?;
            }
        }
        Prepared::Dequeue(k) => {
            if tx(T::Outbox).remove(k.as_slice())?.is_some() {
                bump(tx(T::Meta), b"outbox_len", -1)?;
            }
        }
        Prepared::Ticket(t) => {
            let key = be(t.id.0);
            let value = encode(&**t);
            let before: Option<Ticket> = match tx(T::Tickets).insert(&key[..], value)? {
                Some(old) => Some(decode("tickets", &old).map_err(|e| corrupt(e.to_string()))?),
                None => None,
            };
            reindex(tx, before.as_ref(), t)?;
        }
    }
    Ok(())
}

/// A store error carried out of a transaction.
#[derive(Debug)]
struct StoreErrorBox(&'static str, String);

impl Store for SledStore {
    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.ticket_record(id)
    }

    fn ticket_facts(&self, id: TicketId) -> Result<Option<crate::core::report::Facts>, StoreError> {
        // The same record, only the fields a report reads decoded.
        self.ticket_record(id)
    }

    fn next_ticket_id(&self) -> Result<TicketId, StoreError> {
        Ok(TicketId(
            self.tree(T::Meta)
                .get(b"next_ticket")?
                .map(|v| read_u64(&v))
                .unwrap_or(1),
        ))
    }

    fn list(&self, filter: &TicketFilter, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let bad = |c: &str| StoreError::BadCursor(c.to_string());
        // The most selective index the filter names; by update time only when nothing else.
        let prefix = if let Some(r) = &filter.requester {
            Some(ix_prefix(b'r', r.to_ascii_lowercase().as_bytes()))
        } else if let Some(a) = &filter.assignee {
            Some(ix_prefix(b'a', a.as_bytes()))
        } else if let Some(s) = filter.status {
            Some(status_prefix(s))
        } else if let Some(q) = &filter.queue {
            Some(ix_prefix(b'q', q.as_bytes()))
        } else if filter.updated_since.is_some() {
            Some(vec![b'u'])
        } else {
            None
        };
        let by_update = prefix.as_deref() == Some(b"u");
        // A cursor is the key of the last ticket shown, as text: `N`, or `SECONDS.N` by update time.
        let after: Option<Vec<u8>> = match cursor {
            None => None,
            Some(c) if by_update => {
                let (secs, id) = c.split_once('.').ok_or_else(|| bad(c))?;
                let secs: i64 = secs.parse().map_err(|_| bad(c))?;
                let id: u64 = id.parse().map_err(|_| bad(c))?;
                let mut k = vec![b'u'];
                k.extend_from_slice(&time_key(Timestamp::from_second(secs).map_err(|_| bad(c))?));
                k.extend_from_slice(&be(id));
                Some(k)
            }
            Some(c) => {
                let id: u64 = c.parse().map_err(|_| bad(c))?;
                let mut k = prefix.clone().unwrap_or_default();
                k.extend_from_slice(&be(id));
                Some(k)
            }
        };
        let (tree, prefix) = match prefix {
            Some(p) => (self.tree(T::Ix), p),
            None => (self.tree(T::Tickets), Vec::new()),
        };
        let start = match (&after, by_update, filter.updated_since) {
            (Some(k), _, _) => Bound::Excluded(k.clone()),
            (None, true, Some(since)) => {
                let mut k = vec![b'u'];
                k.extend_from_slice(&time_key(since));
                Bound::Included(k)
            }
            (None, _, _) => Bound::Included(prefix.clone()),
        };
        let end = {
            let mut e = prefix.clone();
            match e.iter().rposition(|b| *b != 0xff) {
                Some(i) if !prefix.is_empty() => {
                    e.truncate(i + 1);
                    e[i] += 1;
                    Bound::Excluded(e)
                }
                _ => Bound::Unbounded,
            }
        };
        let mut page = Page::default();
        for r in tree.range::<Vec<u8>, _>((start, end)) {
            let (k, v) = r?;
            let ticket: Ticket = if prefix.is_empty() {
                decode("tickets", &v)?
            } else {
                let Some(id) = k.len().checked_sub(8).map(|i| read_u64(&k[i..])) else {
                    continue;
                };
                match self.ticket(TicketId(id))? {
                    Some(t) => t,
                    None => continue,
                }
            };
            if !filter.matches(&ticket) {
                continue;
            }
            if page.tickets.len() == limit {
                // One more matches: there is a next page.
                let t = page.tickets.last().expect("a full page");
                page.next = Some(if by_update {
                    format!("{}.{}", t.updated_at.as_second(), t.id)
                } else {
                    t.id.to_string()
                });
                break;
            }
            page.tickets.push(ticket);
        }
        Ok(page)
    }

    fn counts(&self) -> Result<Vec<Count>, StoreError> {
        let mut out = Vec::new();
        for r in self.tree(T::Counts).iter() {
            let (k, v) = r?;
            if let Some(s) = k.first().and_then(|b| status_of_byte(*b)) {
                out.push(Count {
                    status: s,
                    queue: String::from_utf8_lossy(&k[1..]).into_owned(),
                    tickets: read_u64(&v),
                });
            }
        }
        Ok(out)
    }

    fn report_tickets(&self, since: Option<Timestamp>, until: Timestamp) -> Result<Vec<ReportTicket>, StoreError> {
        // Numbers gathered in vectors, sorted and deduplicated once: a month
        // of a large desk is a hundred thousand of them.
        let (mut touched, mut active) = (Vec::new(), Vec::new());
        match since {
            Some(s) => {
                for r in self.tree(T::Activity).range(day_key(s)..).keys() {
                    let k = r?;
                    if k.len() == 16 {
                        touched.push(read_u64(&k[8..]));
                    }
                }
                for s in [Status::New, Status::Open, Status::Pending] {
                    for r in self.tree(T::Ix).scan_prefix(status_prefix(s)).keys() {
                        let k = r?;
                        active.push(read_u64(&k[k.len() - 8..]));
                    }
                }
            }
            None => {
                for r in self.tree(T::Tickets).iter().keys() {
                    touched.push(read_u64(&r?));
                }
            }
        }
        let mut ids = super::report_set(touched, active);
        // A ticket created by the period's end has an event (its creation)
        // on or before that day: the activity keys up to it are far cheaper
        // to walk than the tickets created later are to read.
        let end = day_key(
            until
                .saturating_add(jiff::SignedDuration::from_hours(24))
                .unwrap_or(until),
        );
        // A period that ends after the last activity (this month's report)
        // has every ticket created by then: nothing to walk.
        let activity = self.tree(T::Activity);
        if activity.last()?.is_none_or(|(k, _)| k.as_ref() < &end[..]) {
            return Ok(ids);
        }
        let mut created = Vec::new();
        for r in activity.range(..end).keys() {
            let k = r?;
            if k.len() == 16 {
                created.push(read_u64(&k[8..]));
            }
        }
        created.sort_unstable();
        created.dedup();
        ids.retain(|t| created.binary_search(&t.id.0).is_ok());
        Ok(ids)
    }

    fn messages(&self, id: TicketId) -> Result<Vec<MessageRecord>, StoreError> {
        self.children(T::Messages, "messages", id)
    }

    fn events(&self, id: TicketId) -> Result<Vec<Event>, StoreError> {
        self.children(T::Events, "events", id)
    }

    fn message_id(&self, id: &str) -> Result<Option<IdEntry>, StoreError> {
        Ok(self.tree(T::MsgIds).get(id.as_bytes())?.and_then(|v| {
            (v.len() >= 9).then(|| IdEntry {
                ticket: TicketId(read_u64(&v[..8])),
                stored: v[8] == 1,
                hash: (v.len() > 9).then(|| String::from_utf8_lossy(&v[9..]).into_owned()),
            })
        }))
    }

    fn has_hash(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(self.tree(T::Hashes).contains_key(hash.as_bytes())?)
    }

    fn has_source(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.tree(T::Sources).contains_key(key.as_bytes())?)
    }

    fn has_source_prefix(&self, prefix: &str) -> Result<bool, StoreError> {
        Ok(self
            .tree(T::Sources)
            .scan_prefix(prefix.as_bytes())
            .keys()
            .next()
            .transpose()?
            .is_some())
    }

    fn position(&self, mailbox: &str) -> Result<Option<Position>, StoreError> {
        self.tree(T::Positions)
            .get(mailbox.as_bytes())?
            .map(|v| decode("positions", &v))
            .transpose()
    }

    fn acks_since(&self, address: &str, since: Timestamp) -> Result<u32, StoreError> {
        let mut from = address.as_bytes().to_vec();
        from.push(0);
        from.extend_from_slice(&since.as_second().to_be_bytes());
        let mut end = address.as_bytes().to_vec();
        end.push(1);
        Ok(self.tree(T::Acks).range(from..end).count() as u32)
    }

    fn suppressed_until(&self, address: &str) -> Result<Option<Timestamp>, StoreError> {
        self.tree(T::Suppress)
            .get(address.as_bytes())?
            .map(|v| decode::<Timestamp>("suppress", &v))
            .transpose()
    }

    fn loads(&self) -> Result<HashMap<String, u32>, StoreError> {
        self.tree(T::Loads)
            .iter()
            .map(|r| {
                let (k, v) = r?;
                let n = u32::try_from(read_u64(&v)).unwrap_or(u32::MAX);
                Ok((String::from_utf8_lossy(&k).into_owned(), n))
            })
            .collect()
    }

    fn round_robin(&self, queue: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree(T::Meta)
            .get(format!("rr:{queue}").as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn due_until(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let end = time_key(Timestamp::from_second(now.as_second() + 1).unwrap_or(now));
        let mut out = Vec::new();
        for r in self.tree(T::Due).range(..end.to_vec()) {
            let (k, _) = r?;
            if let Some(item) = parse_due_key(&k) {
                out.push(item);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .tree(T::Due)
            .first()?
            .and_then(|(k, _)| parse_due_key(&k))
            .map(|t| t.at))
    }

    fn hooks(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, HookEntry)>, StoreError> {
        let start = match after {
            Some(seq) => Bound::Excluded(be(seq).to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for r in self
            .tree(T::Hooks)
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (k, v) = r?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                tree: "hooks",
                message: "a key of other than 8 bytes".into(),
            })?);
            out.push((seq, decode("hooks", &v)?));
        }
        Ok(out)
    }

    fn outbox(
        &self,
        lane: Lane,
        after: Option<OutboxKey>,
        limit: usize,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        let start = match after {
            Some(k) => Bound::Excluded(outbox_key(k)),
            None => Bound::Included(vec![lane as u8]),
        };
        let end = Bound::Excluded(vec![lane as u8 + 1]);
        let mut out = Vec::new();
        for r in self.tree(T::Outbox).range::<Vec<u8>, _>((start, end)).take(limit) {
            let (k, v) = r?;
            if let Some(key) = parse_outbox_key(&k) {
                out.push((key, decode("outbox", &v)?));
            }
        }
        Ok(out)
    }

    fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self.tree(T::Meta).get(b"outbox_len")?.map_or(0, |v| read_u64(&v)))
    }

    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.tree(T::Quarantine)
            .iter()
            .map(|r| r.map_err(StoreError::from).and_then(|(_, v)| decode("quarantine", &v)))
            .collect()
    }

    fn put_blobs(&self, blobs: &[&[u8]]) -> Result<Vec<String>, StoreError> {
        let _writing = self.writing();
        self.noting(self.blobs.put_all(blobs))
    }

    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.blobs.get(key)
    }

    fn sweep_blobs(&self) -> Result<u64, StoreError> {
        let _writing = self.writing();
        let refs = self.tree(T::BlobRefs);
        self.blobs
            .sweep(SWEEP_GRACE_SECS, |key| Ok(refs.contains_key(key.as_bytes())?))
    }

    fn prune_acks(&self, before: Timestamp) -> Result<u64, StoreError> {
        let _writing = self.writing();
        let acks = self.tree(T::Acks);
        let mut gone = 0;
        for r in acks.iter().keys() {
            let k = r?;
            if ack_of_key(&k).is_some_and(|(_, at)| at < before.as_second()) {
                acks.remove(&k)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        self.next_id()
    }

    fn commit(&self, change: Change) -> Result<(), StoreError> {
        if change.is_empty() {
            return Ok(());
        }
        let _writing = self.writing();
        self.noting(self.commit_now(change))
    }

    fn backup(&self, to: &Path) -> Result<Backup, StoreError> {
        // Held from the look at `to` on: two backups at once go one after the other.
        let still = self.quiet.write().unwrap_or_else(|p| p.into_inner());
        let exists = |why: &str| {
            fs_error(to)(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{why}: a backup goes to a new folder"),
            ))
        };
        if to.exists() {
            return Err(exists("already exists"));
        }
        let name = to.file_name().ok_or_else(|| exists("names no folder"))?;
        let parent = to.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(fs_error(parent))?;
        // Room for a copy as large as the store and a tenth more, as for a
        // compaction: filling the disk would fail the store's own writes.
        let bytes = store_bytes(&self.data_dir) + blob_bytes(&self.data_dir);
        let stat = rustix::fs::statvfs(parent).map_err(|e| fs_error(parent)(e.into()))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if !room_to_compact(bytes, free) {
            return Err(fs_error(parent)(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{} MB free, too little for a backup of a store of {} MB",
                    free / 1_000_000,
                    bytes / 1_000_000
                ),
            )));
        }
        // Written beside, renamed into place whole: a folder of that name is
        // a whole backup. One a crash or a stop cut short is dropped (this
        // process holds the store: no other backup of it is being written).
        for e in std::fs::read_dir(parent).map_err(fs_error(parent))? {
            let e = e.map_err(fs_error(parent))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') && n.ends_with(".partial") {
                tracing::info!(folder = %e.path().display(), "removing a backup left unfinished");
                std::fs::remove_dir_all(e.path()).map_err(fs_error(&e.path()))?;
            }
        }
        let partial = parent.join(format!(".{}.partial", name.to_string_lossy()));
        std::fs::create_dir(&partial).map_err(fs_error(&partial))?;
        // Flushed, with every write waiting (and sled's own background
        // flusher off), sled's files hold the store as it is and change no
        // more: a copy of them is the store at this moment, as a crash here
        // would leave it. Copying the files, rather than reading every
        // record through sled, keeps the daemon's memory as it was.
        let copied = self
            .noting(self.db.flush().map(drop).map_err(StoreError::from))
            .and_then(|()| {
                // The blob packs change no more either: their writes and sweeps wait too.
                copy_files(&self.data_dir.join("store"), &partial.join("store"), &self.stopping)?;
                copy_files(&self.data_dir.join("blobs"), &partial.join("blobs"), &self.stopping)
            });
        drop(still);
        if let Err(e) = copied {
            // What was copied goes at once: its room is the disk's, and a
            // full disk is one reason a copy fails.
            if let Err(left) = std::fs::remove_dir_all(&partial) {
                tracing::warn!(folder = %partial.display(), error = %left, "an unfinished backup is left for the next one to remove");
            }
            return Err(e);
        }
        sync_dir(&partial)?;
        std::fs::rename(&partial, to).map_err(fs_error(to))?;
        sync_dir(parent)?;
        Ok(Backup {
            path: to.to_path_buf(),
            store_bytes: files_bytes(&to.join("store")),
            blob_bytes: files_bytes(&to.join("blobs")),
            removed: Vec::new(),
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.noting(self.db.flush().map(drop).map_err(StoreError::from))
    }

    fn failed(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn ping(&self) -> Result<(), StoreError> {
        match self.failed() {
            None => Ok(()),
            Some(e) => Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(format!(
                "a write failed ({e}): the store writes no more until it is opened again"
            ))))),
        }
    }

    fn disk_bytes(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        Ok(vec![
            ("index", store_bytes(&self.data_dir)),
            ("blobs", blob_bytes(&self.data_dir)),
        ])
    }

    fn compacted_bytes(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.tree(T::Meta).get(COMPACTED_BYTES)?.map(|v| read_u64(&v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::store::QuarantineEntry;
    use serde_json::{Value, json};

    /// The order of `n` records in key order through [`FillOrder`].
    fn fill_order(n: u32) -> Vec<u32> {
        let mut order = FillOrder::default();
        let mut out = Vec::new();
        for i in 0..n {
            order.push(sled::IVec::from(&i.to_be_bytes()), sled::IVec::from(&[][..]), &mut out);
        }
        order.finish(&mut out);
        out.iter()
            .map(|(k, _)| u32::from_be_bytes(k.as_ref().try_into().unwrap()))
            .collect()
    }

    #[test]
    fn the_compaction_order_fills_each_leaf_before_the_next_and_writes_every_record_once() {
        // 9 of the first run; 8 of the second (the leaf splits 9 | 8); the
        // first run's last 7; the second's ninth; and so on.
        let order = fill_order(40);
        assert_eq!(
            order,
            [
                (0..9).collect::<Vec<_>>(),
                (16..24).collect(),
                (9..16).collect(),
                vec![24],
                (32..40).collect(),
                (25..32).collect(),
            ]
            .concat()
        );
        for n in [0, 1, 9, 16, 17, 100, 1000] {
            let mut got = fill_order(n);
            got.sort_unstable();
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "{n} records");
        }
    }

    #[test]
    fn a_compaction_at_start_needs_the_stores_size_and_a_tenth_free() {
        const MB: u64 = 1 << 20;
        assert!(room_to_compact(10 * MB, 74 * MB));
        assert!(!room_to_compact(10 * MB, 73 * MB), "64 MiB stay free at least");
        assert!(room_to_compact(1000 * MB, 1100 * MB));
        assert!(!room_to_compact(1000 * MB, 1099 * MB), "a tenth stays free");
        assert!(!room_to_compact(u64::MAX, u64::MAX - 1));
    }

    #[test]
    fn records_are_compressed_against_the_frozen_dictionary_and_old_ones_still_read() {
        // Records on disk name this dictionary: changing it needs a new record version.
        assert_eq!(
            crate::adapters::inbound::hex(ring::digest::digest(&ring::digest::SHA256, DICT).as_ref()),
            "90b9d9eb3763080d77fb87487da874bd7f835d75388821907c292885fab68f6d"
        );
        let message = json!({
            "message_id": "m7@customer.test",
            "from": {"name": "Customer 7", "email": "c7@customer.test"},
            "to": [{"email": "support@example.com"}],
            "date": "2026-09-01T00:07:00Z",
            "direction": "inbound",
            "kind": "customer",
            "subject": "Order 7 question",
            "text": "Hello,\r\nmy order arrived damaged. Could you please send a new one?\r\n\r\nThanks,\r\nKim\r\n",
            "language": "en",
            "sentiment": -0.4
        });
        let plain = serde_json::to_vec(&message).unwrap();
        let stored = encode(&message);
        assert_eq!(stored[0], RECORD_LZ4);
        assert!(
            stored.len() * 3 < plain.len() * 2,
            "{} bytes for {}",
            stored.len(),
            plain.len()
        );
        assert_eq!(decode::<Value>("messages", &stored).unwrap(), message);
        // Short records stay JSON; records of layout 3 (version 1) still read.
        assert_eq!(encode(&json!({"a": 1}))[0], RECORD_VERSION);
        let mut old = vec![RECORD_VERSION];
        old.extend_from_slice(&plain);
        assert_eq!(decode::<Value>("messages", &old).unwrap(), message);
        // Damage anywhere is an error or other JSON: never a panic, nor a huge allocation.
        for at in 1..stored.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = stored.clone();
                bad[at] ^= flip;
                let _ = decode::<Value>("messages", &bad);
            }
        }
        assert!(matches!(
            decode::<Value>("messages", &[RECORD_LZ4, 0xff, 0xff, 0xff, 0x7f, 0]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode::<Value>("messages", &[9, b'{', b'}']),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_source_prefix_is_known_once_a_key_under_it_is() {
        let dir = std::env::temp_dir().join(format!("postdesk-sled-prefix-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir, &StoreSettings::default()).unwrap();
        assert!(!store.has_source_prefix("maildir:support:").unwrap());
        let mut change = Change::default();
        change.push(Op::Source("maildir:support:1.eml".into(), "k".into()));
        store.commit(change).unwrap();
        assert!(store.has_source_prefix("maildir:support:").unwrap());
        assert!(!store.has_source_prefix("maildir:sales:").unwrap());
        assert!(!store.has_source_prefix("maildir:support:2").unwrap());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sweep_keeps_blobs_a_record_names() {
        let dir = std::env::temp_dir().join(format!("postdesk-sled-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir, &StoreSettings::default()).unwrap();
        let old = jiff::Timestamp::now().as_second() as u64 - 7200;
        let named: [u8; 32] = [1; 32];
        let unnamed: [u8; 32] = [2; 32];
        store
            .blobs
            .put_raw(&[(named, b"named", old), (unnamed, b"unnamed", old)], false)
            .unwrap();
        let key = crate::adapters::inbound::hex(&named);
        let mut change = Change::default();
        change.push(Op::Quarantine(Box::new(QuarantineEntry {
            at: jiff::Timestamp::now(),
            mailbox: "support".into(),
            source: None,
            reason: "test".into(),
            raw_key: key.clone(),
            size: 5,
        })));
        store.commit(change).unwrap();
        assert_eq!(store.sweep_blobs().unwrap(), 1);
        assert_eq!(store.blob(&key).unwrap().as_deref(), Some(&b"named"[..]));
        assert_eq!(store.blob(&crate::adapters::inbound::hex(&unnamed)).unwrap(), None);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn event(n: usize, pad: usize) -> Event {
        // Digits that LZ4 cannot shrink much, so `pad` sets the record's size.
        let mut x = n as u64 * 2_654_435_761 + 1;
        let pad: String = (0..pad)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'0' + (x % 10) as u8)
            })
            .collect();
        Event::new(
            Timestamp::from_second(1_790_000_000 + n as i64).unwrap(),
            "note",
            "alice@example.com",
            &[("n", json!(n)), ("pad", json!(pad))],
        )
    }

    #[test]
    fn a_stores_size_counts_the_values_sled_keeps_in_files_of_their_own() {
        let dir = std::env::temp_dir().join(format!("postdesk-sled-bytes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir, &StoreSettings::default()).unwrap();
        let mut change = Change::default();
        change.push(Op::Event(TicketId(1), Box::new(event(1, 4_000_000))));
        store.commit(change).unwrap();
        store.flush().unwrap();
        // sled wrote the 4 MB record as a file in the store's `blobs/`.
        let own: u64 = std::fs::read_dir(dir.join("store/blobs"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(own > 1_000_000, "{own} bytes in sled's blobs/");
        assert!(store_bytes(&dir) > own, "{} bytes counted", store_bytes(&dir));
        let backup = store.backup(&dir.join("backups/b")).unwrap();
        assert!(backup.store_bytes > own, "{} bytes in the backup", backup.store_bytes);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_backup_after_stop_gives_up_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("postdesk-sled-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir, &StoreSettings::default()).unwrap();
        let mut change = Change::default();
        change.push(Op::Event(TicketId(1), Box::new(event(1, 100))));
        store.commit(change).unwrap();
        store.stop();
        let to = dir.join("backups/b");
        assert!(matches!(store.backup(&to), Err(StoreError::Stopping(_))));
        let left: Vec<_> = std::fs::read_dir(dir.join("backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // Writes go on (the stop waits for them, not for a backup).
        let mut change = Change::default();
        change.push(Op::Event(TicketId(1), Box::new(event(2, 100))));
        store.commit(change).unwrap();
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn numbers(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.detail["n"].as_u64().unwrap()).collect()
    }

    /// Every key of a tree, with its value's length.
    fn keys(store: &SledStore, t: T) -> Vec<(Vec<u8>, usize)> {
        store
            .tree(t)
            .iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.len())).unwrap())
            .collect()
    }

    #[test]
    fn a_tickets_events_share_chunks_of_sixteen_records_or_8_kib_and_read_back_in_order() {
        let dir = std::env::temp_dir().join(format!("postdesk-sled-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir, &StoreSettings::default()).unwrap();
        // Ticket 1: 40 small events one change each; ticket 2, between them: 3 of 3 KB.
        for n in 0..40 {
            let mut change = Change::default();
            change.push(Op::Event(TicketId(1), Box::new(event(n, 10))));
            if n % 13 == 0 {
                change.push(Op::Event(TicketId(2), Box::new(event(100 + n, 3000))));
            }
            store.commit(change).unwrap();
        }
        // Two in one change.
        let mut change = Change::default();
        change.push(Op::Event(TicketId(1), Box::new(event(40, 10))));
        change.push(Op::Event(TicketId(1), Box::new(event(41, 10))));
        store.commit(change).unwrap();
        assert_eq!(
            numbers(&store.events(TicketId(1)).unwrap()),
            (0..42).collect::<Vec<_>>()
        );
        assert_eq!(numbers(&store.events(TicketId(2)).unwrap()), [100, 113, 126, 139]);
        assert!(store.events(TicketId(3)).unwrap().is_empty());
        let keys = keys(&store, T::Events);
        let of = |id: u64| keys.iter().filter(|(k, _)| k[..8] == be(id)).collect::<Vec<_>>();
        // 16 + 16 + 10: two full chunks, then the open one last.
        let one = of(1);
        assert_eq!(one.len(), 3, "{one:?}");
        assert_eq!(one.iter().map(|(k, _)| k.len()).collect::<Vec<_>>(), [17, 17, 9]);
        assert_eq!(one[2].0, tail_key(TicketId(1)));
        // Two records of 3 KB fill 8 KiB: a chunk each pair.
        let two = of(2);
        assert_eq!(two.len(), 2, "{two:?}");
        assert!(two.iter().all(|(_, len)| *len <= CHUNK_BYTES), "{two:?}");
        // What moves to another store counts each event once.
        let mut dumped = 0;
        store
            .dump(100, &mut |c: Change| {
                dumped += c.ops.iter().filter(|op| matches!(op, Op::Event(..))).count();
                Ok(())
            })
            .unwrap();
        assert_eq!(dumped, 46);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Opens the store at `dir` again: sled's threads may hold its lock a
    /// moment after the last handle was dropped.
    fn reopen(dir: &std::path::Path) -> SledStore {
        for _ in 0..200 {
            match SledStore::open(dir, &StoreSettings::default()) {
                Err(StoreError::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
                other => return other.unwrap(),
            }
        }
        panic!("{} still locked after 2 s", dir.display());
    }

    #[test]
    fn a_snapshot_sled_left_unfinished_is_removed_and_the_store_opens_whole() {
        let dir = std::env::temp_dir().join(format!("postdesk-sled-snapshot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir, &StoreSettings::default()).unwrap();
        for n in 0..30 {
            let mut change = Change::default();
            change.push(Op::Event(TicketId(1), Box::new(event(n, 10))));
            store.commit(change).unwrap();
        }
        store.flush().unwrap();
        drop(store);
        // What a full disk left: the snapshot sled began as it opened the
        // store, empty, its number past every finished one's; and one that
        // a crash cut short.
        let store_dir = dir.join("store");
        let empty = store_dir.join("snap.7FFFFFFFFFFFFFFF.generating");
        let cut = store_dir.join("snap.7FFFFFFFFFFFFFFE.generating");
        std::fs::write(&empty, b"").unwrap();
        std::fs::write(&cut, [7u8; 40]).unwrap();
        let store = reopen(&dir);
        assert_eq!(
            numbers(&store.events(TicketId(1)).unwrap()),
            (0..30).collect::<Vec<_>>()
        );
        assert!(!empty.exists() && !cut.exists());
        // While a process has the store open (sled's lock held), such a
        // file may be its snapshot in progress: it is left alone.
        std::fs::write(&empty, b"").unwrap();
        drop_unfinished_snapshots(&store_dir).unwrap();
        assert!(empty.exists());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_of_layout_4_are_folded_into_chunks_on_open_and_an_interrupted_fold_finishes() {
        let dir = std::env::temp_dir().join(format!("postdesk-sled-fold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir, &StoreSettings::default()).unwrap();
        // What layout 4 wrote: a key per event, the ticket then a sequence number.
        let legacy = |id: u64, seq: u64| [be(id), be(seq)].concat();
        for n in 0..20 {
            store
                .tree(T::Events)
                .insert(legacy(1, 50 + n), encode(&event(n as usize, 10)))
                .unwrap();
        }
        store
            .tree(T::Events)
            .insert(legacy(2, 90), encode(&event(7, 10)))
            .unwrap();
        store.tree(T::Tickets).insert(be(1), &b"placeholder"[..]).unwrap();
        store.tree(T::Meta).insert(b"schema", &be(4)).unwrap();
        drop(store);
        let store = reopen(&dir);
        assert_eq!(store.schema().unwrap(), SCHEMA);
        assert_eq!(
            numbers(&store.events(TicketId(1)).unwrap()),
            (0..20).collect::<Vec<_>>()
        );
        assert_eq!(numbers(&store.events(TicketId(2)).unwrap()), [7]);
        let before = keys(&store, T::Events);
        assert_eq!(before.iter().map(|(k, _)| k.len()).collect::<Vec<_>>(), [17, 9, 9]);
        // The fold's chunks are those the appends make: the next event joins the open one.
        let mut change = Change::default();
        change.push(Op::Event(TicketId(1), Box::new(event(20, 10))));
        store.commit(change).unwrap();
        assert_eq!(
            numbers(&store.events(TicketId(1)).unwrap()),
            (0..21).collect::<Vec<_>>()
        );
        assert_eq!(keys(&store, T::Events).len(), 3);
        // A crash between two batches: the version not yet written, ticket 3
        // still in the old layout. The next open folds it and leaves the rest.
        let after = keys(&store, T::Events);
        for n in 0..3 {
            store
                .tree(T::Events)
                .insert(legacy(3, 200 + n), encode(&event(30 + n as usize, 10)))
                .unwrap();
        }
        store.tree(T::Meta).insert(b"schema", &be(4)).unwrap();
        drop(store);
        let store = reopen(&dir);
        assert_eq!(store.upgraded_from(), Some(4));
        let now = keys(&store, T::Events);
        assert_eq!(now[..after.len()], after[..], "tickets 1 and 2 are as they were");
        assert_eq!(now[after.len()..].iter().map(|(k, _)| k.len()).collect::<Vec<_>>(), [9]);
        assert_eq!(
            numbers(&store.events(TicketId(1)).unwrap()),
            (0..21).collect::<Vec<_>>()
        );
        assert_eq!(numbers(&store.events(TicketId(3)).unwrap()), [30, 31, 32]);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
