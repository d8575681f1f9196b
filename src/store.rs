//! The sled store: named trees, versioned records, one transaction per mail.
//!
//! Trees: `meta`, `tickets`, `messages`, `events`, `raw`, `msgids`, `hashes`,
//! `sources`, `positions`, `outbox`, `quarantine`, `acks`, `suppress`.
//! Records are a version byte followed by JSON. Keys with numbers are
//! big-endian so ranges sort by number.

use crate::model::{Event, MessageRecord, Ticket, TicketId};
use crate::outgoing::OutgoingMail;
use crate::thread::ThreadIndex;
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::Path;

/// Current on-disk record version.
const RECORD_VERSION: u8 = 1;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually the running daemon) holds the store.
    #[error("the store at {0} is in use by another postdesk process (is the daemon running?)")]
    Locked(String),
    /// sled failed.
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be read.
    #[error("corrupt record in tree {tree}: {message}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// The trees of the store, by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum TreeName {
    /// Counters and schema version.
    Meta,
    /// Ticket id → ticket.
    Tickets,
    /// Ticket id + seq → message.
    Messages,
    /// Ticket id + seq → event.
    Events,
    /// Message key → raw mail.
    Raw,
    /// Message-ID → ticket id and whether the message itself is stored.
    MsgIds,
    /// Content hash → message key (dedupe of mail without Message-ID).
    Hashes,
    /// Source key (mailbox, UIDVALIDITY, UID or file name) → message key: processed marks.
    Sources,
    /// Mailbox → position (UIDVALIDITY and last UID).
    Positions,
    /// Seq → outbox entry.
    Outbox,
    /// Seq → quarantined mail.
    Quarantine,
    /// Recipient + time → acknowledgement sent (rate limits).
    Acks,
    /// Address → suppressed until (hard bounces).
    Suppress,
    /// Agent name → open tickets assigned.
    Loads,
    /// Due time + ticket + timer kind → (): timers, in time order.
    Due,
}

const TREE_NAMES: [&str; 15] = [
    "meta",
    "tickets",
    "messages",
    "events",
    "raw",
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
];

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
    /// Key of the raw mail in the raw tree.
    pub raw_key: String,
    /// Size in bytes.
    pub size: usize,
}

/// A mailbox position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// IMAP UIDVALIDITY.
    pub uid_validity: u32,
    /// Highest UID processed.
    pub last_uid: u32,
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

/// A set of writes applied in one transaction.
#[derive(Default, Debug)]
pub struct WriteSet {
    ops: Vec<(TreeName, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteSet {
    /// Puts raw bytes.
    pub fn put_raw(&mut self, tree: TreeName, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), Some(value.into())));
    }
    /// Puts a versioned record.
    pub fn put<T: Serialize>(&mut self, tree: TreeName, key: impl Into<Vec<u8>>, value: &T) {
        self.put_raw(tree, key, encode(value));
    }
    /// Removes a key.
    pub fn remove(&mut self, tree: TreeName, key: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), None));
    }
    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Big-endian key of a number.
pub fn key_u64(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Key of a ticket's child record.
pub fn key_child(ticket: TicketId, seq: u64) -> Vec<u8> {
    let mut k = ticket.0.to_be_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, value).expect("records serialise");
    out
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => serde_json::from_slice(rest).map_err(|e| StoreError::Corrupt {
            tree,
            message: e.to_string(),
        }),
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

impl Store {
    /// Opens (or creates) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        let path = data_dir.join("store");
        let db = match sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .cache_capacity(256 * 1024 * 1024)
            .open()
        {
            Ok(db) => db,
            Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") => {
                return Err(StoreError::Locked(path.display().to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let trees = TREE_NAMES
            .iter()
            .map(|n| db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Store { db, trees })
    }

    fn tree(&self, name: TreeName) -> &sled::Tree {
        &self.trees[name as usize]
    }

    /// Applies a write set atomically.
    pub fn commit(&self, writes: &WriteSet) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        // Only the trees this write touches take part in the transaction.
        let mut used: Vec<usize> = writes.ops.iter().map(|(t, _, _)| *t as usize).collect();
        used.sort_unstable();
        used.dedup();
        let refs: Vec<&sled::Tree> = used.iter().map(|&i| &self.trees[i]).collect();
        let result: Result<(), TransactionError<()>> = refs.as_slice().transaction(|trees| {
            for (tree, key, value) in &writes.ops {
                let pos = used
                    .binary_search(&(*tree as usize))
                    .expect("tree is in the transaction");
                let t = &trees[pos];
                match value {
                    Some(v) => {
                        t.insert(key.as_slice(), v.as_slice())?;
                    }
                    None => {
                        t.remove(key.as_slice())?;
                    }
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => unreachable!("the transaction never aborts"),
        }
    }

    /// Makes every committed write durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A unique, increasing number (for sequence keys and nonces).
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// The number the next new ticket gets.
    pub fn next_ticket_id(&self) -> Result<TicketId, StoreError> {
        Ok(TicketId(
            self.tree(TreeName::Meta)
                .get(b"next_ticket")?
                .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
                .unwrap_or(1),
        ))
    }

    /// Records that `id` is taken.
    pub fn set_next_ticket_id(writes: &mut WriteSet, next: TicketId) {
        writes.put_raw(TreeName::Meta, b"next_ticket".to_vec(), key_u64(next.0).to_vec());
    }

    /// A ticket.
    pub fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.tree(TreeName::Tickets)
            .get(key_u64(id.0))?
            .map(|v| decode("tickets", &v))
            .transpose()
    }

    /// Every ticket, by number.
    pub fn tickets(&self) -> impl Iterator<Item = Result<Ticket, StoreError>> + '_ {
        self.tree(TreeName::Tickets)
            .iter()
            .map(|r| r.map_err(StoreError::from).and_then(|(_, v)| decode("tickets", &v)))
    }

    /// Writes a ticket.
    pub fn put_ticket(writes: &mut WriteSet, ticket: &Ticket) {
        writes.put(TreeName::Tickets, key_u64(ticket.id.0).to_vec(), ticket);
    }

    /// A ticket's messages in order.
    pub fn messages(&self, id: TicketId) -> Result<Vec<MessageRecord>, StoreError> {
        self.children(TreeName::Messages, "messages", id)
    }

    /// A ticket's events in order.
    pub fn events(&self, id: TicketId) -> Result<Vec<Event>, StoreError> {
        self.children(TreeName::Events, "events", id)
    }

    fn children<T: DeserializeOwned>(
        &self,
        tree: TreeName,
        name: &'static str,
        id: TicketId,
    ) -> Result<Vec<T>, StoreError> {
        self.tree(tree)
            .scan_prefix(key_u64(id.0))
            .map(|r| r.map_err(StoreError::from).and_then(|(_, v)| decode(name, &v)))
            .collect()
    }

    /// Appends a message to a ticket.
    pub fn add_message(&self, writes: &mut WriteSet, id: TicketId, message: &MessageRecord) -> Result<(), StoreError> {
        writes.put(TreeName::Messages, key_child(id, self.next_seq()?), message);
        Ok(())
    }

    /// Appends an event to a ticket's log.
    pub fn add_event(&self, writes: &mut WriteSet, id: TicketId, event: &Event) -> Result<(), StoreError> {
        writes.put(TreeName::Events, key_child(id, self.next_seq()?), event);
        Ok(())
    }

    /// The raw bytes of a stored mail.
    pub fn raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(TreeName::Raw).get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Looks up a Message-ID.
    pub fn message_id(&self, id: &str) -> Result<Option<IdEntry>, StoreError> {
        Ok(self.tree(TreeName::MsgIds).get(id.as_bytes())?.and_then(|v| {
            (v.len() >= 9).then(|| IdEntry {
                ticket: TicketId(u64::from_be_bytes(v[..8].try_into().expect("8 bytes"))),
                stored: v[8] == 1,
                hash: (v.len() > 9).then(|| String::from_utf8_lossy(&v[9..]).into_owned()),
            })
        }))
    }

    /// Indexes a Message-ID.
    pub fn put_message_id(writes: &mut WriteSet, id: &str, entry: IdEntry) {
        let mut v = key_u64(entry.ticket.0).to_vec();
        v.push(u8::from(entry.stored));
        if let Some(h) = &entry.hash {
            v.extend_from_slice(h.as_bytes());
        }
        writes.put_raw(TreeName::MsgIds, id.as_bytes().to_vec(), v);
    }

    /// Whether a content hash is known.
    pub fn has_hash(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(self.tree(TreeName::Hashes).contains_key(hash.as_bytes())?)
    }

    /// Whether a source key was processed.
    pub fn has_source(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.tree(TreeName::Sources).contains_key(key.as_bytes())?)
    }

    /// A mailbox's position.
    pub fn position(&self, mailbox: &str) -> Result<Option<Position>, StoreError> {
        self.tree(TreeName::Positions)
            .get(mailbox.as_bytes())?
            .map(|v| decode("positions", &v))
            .transpose()
    }

    /// Outbox entries in queue order.
    pub fn outbox(&self) -> Result<Vec<(Vec<u8>, OutboxEntry)>, StoreError> {
        self.tree(TreeName::Outbox)
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((k.to_vec(), decode("outbox", &v)?))
            })
            .collect()
    }

    /// Quarantined mail in order.
    pub fn quarantine(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.tree(TreeName::Quarantine)
            .iter()
            .map(|r| r.map_err(StoreError::from).and_then(|(_, v)| decode("quarantine", &v)))
            .collect()
    }

    /// Acknowledgements sent to `address` since `since`.
    pub fn acks_since(&self, address: &str, since: Timestamp) -> Result<u32, StoreError> {
        let mut start = address.as_bytes().to_vec();
        start.push(0);
        let mut from = start.clone();
        from.extend_from_slice(&since.as_second().to_be_bytes());
        let mut end = address.as_bytes().to_vec();
        end.push(1);
        Ok(self.tree(TreeName::Acks).range(from..end).count() as u32)
    }

    /// Records an acknowledgement sent to `address` at `at` (`seq` makes the key unique).
    pub fn put_ack(writes: &mut WriteSet, address: &str, at: Timestamp, seq: u64) {
        let mut k = address.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&at.as_second().to_be_bytes());
        k.extend_from_slice(&seq.to_be_bytes());
        writes.put_raw(TreeName::Acks, k, Vec::new());
    }

    /// Whether `address` is suppressed at `now` after a hard bounce.
    pub fn suppressed(&self, address: &str, now: Timestamp) -> Result<bool, StoreError> {
        Ok(match self.tree(TreeName::Suppress).get(address.as_bytes())? {
            Some(v) => decode::<Timestamp>("suppress", &v)? > now,
            None => false,
        })
    }

    /// Counts of each tree, for `status` and tests.
    pub fn tree_len(&self, name: TreeName) -> usize {
        self.tree(name).len()
    }
}

impl Store {
    /// Open tickets per agent.
    pub fn loads(&self) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        self.tree(TreeName::Loads)
            .iter()
            .map(|r| {
                let (k, v) = r?;
                let n = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4]));
                Ok((String::from_utf8_lossy(&k).into_owned(), n))
            })
            .collect()
    }

    /// Adjusts agent loads for a ticket that changed from `before` to `after`.
    pub fn update_load(&self, w: &mut WriteSet, before: Option<&Ticket>, after: &Ticket) -> Result<(), StoreError> {
        let counted = |t: &Ticket| t.assignee.clone().filter(|_| t.is_active());
        let (old, new) = (before.and_then(counted), counted(after));
        if old == new {
            return Ok(());
        }
        let loads = self.loads()?;
        if let Some(o) = &old {
            let n = loads.get(o).copied().unwrap_or(0).saturating_sub(1);
            w.put_raw(TreeName::Loads, o.as_bytes().to_vec(), n.to_be_bytes().to_vec());
        }
        if let Some(n) = &new {
            let c = loads.get(n).copied().unwrap_or(0) + 1;
            w.put_raw(TreeName::Loads, n.as_bytes().to_vec(), c.to_be_bytes().to_vec());
        }
        Ok(())
    }

    /// The agent a queue's round robin picked last.
    pub fn round_robin(&self, queue: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tree(TreeName::Meta)
            .get(format!("rr:{queue}").as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Remembers the agent a queue's round robin picked.
    pub fn set_round_robin(w: &mut WriteSet, queue: &str, agent: &str) {
        w.put_raw(
            TreeName::Meta,
            format!("rr:{queue}").into_bytes(),
            agent.as_bytes().to_vec(),
        );
    }
}

/// Key of a timer: the time first, so a range scan finds what is due.
pub fn due_key(at: Timestamp, ticket: TicketId, kind: u8) -> Vec<u8> {
    let mut k = ((at.as_second() as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(&ticket.0.to_be_bytes());
    k.push(kind);
    k
}

fn parse_due_key(k: &[u8]) -> Option<(Timestamp, TicketId, u8)> {
    if k.len() != 17 {
        return None;
    }
    let secs = (u64::from_be_bytes(k[..8].try_into().ok()?) ^ (1 << 63)) as i64;
    Some((
        Timestamp::from_second(secs).ok()?,
        TicketId(u64::from_be_bytes(k[8..16].try_into().ok()?)),
        k[16],
    ))
}

impl Store {
    /// Timers due at or before `now`, in time order, at most `limit`.
    pub fn due_until(&self, now: Timestamp, limit: usize) -> Result<Vec<(Timestamp, TicketId, u8)>, StoreError> {
        let end = due_key(
            Timestamp::from_second(now.as_second() + 1).unwrap_or(now),
            TicketId(0),
            0,
        );
        let mut out = Vec::new();
        for r in self.tree(TreeName::Due).range(..end) {
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

    /// When the next timer is due.
    pub fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .tree(TreeName::Due)
            .first()?
            .and_then(|(k, _)| parse_due_key(&k))
            .map(|(t, _, _)| t))
    }
}

impl ThreadIndex for Store {
    fn ticket_of_message_id(&self, id: &str) -> Option<(TicketId, bool)> {
        self.message_id(id).ok().flatten().map(|e| (e.ticket, e.stored))
    }
    fn ticket(&self, id: TicketId) -> Option<Ticket> {
        Store::ticket(self, id).ok().flatten()
    }
}
