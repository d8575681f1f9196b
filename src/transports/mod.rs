//! Transports: mail in from IMAP folders and Maildirs, mail out over SMTP
//! (or to files), and the HTTP API.
//!
//! Sources only move bytes and positions; they hand each mail to the
//! pipeline through a [`Sink`], flush the store, and only then mark the mail
//! processed on the server or on disk.

pub mod channels;
pub mod http;
pub mod imap;
pub mod lookup;
pub mod maildir;
pub mod oauth2;
pub mod smtp;
pub mod web;
pub mod webhook;

use crate::adapters::store::StoreError;
use crate::pipeline::{Origin, Pipeline, Processed};
use jiff::Timestamp;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What went out (a mail sent, a webhook delivered) whose record the store
/// refused: the sender keeps it and commits it again before its next pass,
/// which waits until it is recorded. Else the mail or delivery, still
/// queued, would go out again at every pass for as long as the store
/// refuses (a database gone a moment, or refusing that write). An embedded
/// store that refused a write has failed, and the daemon stops
/// ([`crate::adapters::store::Store::failed`]).
#[derive(Debug, Default)]
pub struct Unrecorded(Mutex<Vec<crate::adapters::store::Change>>);

impl Unrecorded {
    /// Commits the record of an attempt; when what it records went out
    /// (`went_out`) and the store refuses it, keeps it for [`Unrecorded::record`].
    pub fn commit(
        &self,
        store: &dyn crate::adapters::store::Store,
        change: crate::adapters::store::Change,
        went_out: bool,
    ) -> Result<(), StoreError> {
        let held = went_out.then(|| change.clone());
        store.commit(change).inspect_err(|_| {
            if let Some(change) = held {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).push(change);
            }
        })
    }

    /// Commits what is held, in order, and flushes; the first refusal keeps
    /// it and the rest.
    pub fn record(&self, store: &dyn crate::adapters::store::Store) -> Result<(), StoreError> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_empty() {
            return Ok(());
        }
        while let Some(change) = held.first() {
            store.commit(change.clone())?;
            held.remove(0);
        }
        tracing::info!("the store took the records it had refused");
        store.flush()
    }
}

/// The shared handle sources use to store mail: one writer at a time.
#[derive(Clone, Debug)]
pub struct Sink {
    /// The pipeline in force; SIGHUP swaps in one with the new config.
    pub current: Arc<RwLock<Pipeline>>,
    /// Serialises writers so ticket numbers and dedupe checks cannot race.
    pub writer: Arc<Mutex<()>>,
    /// Wakes the sender after mail was queued.
    pub wake_sender: Arc<tokio::sync::Notify>,
}

impl Sink {
    /// The pipeline in force now (cheap: shared handles).
    pub fn pipeline(&self) -> Pipeline {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Processes a batch of mails arriving now, in order under the writer
    /// lock, off the async workers: one blob sync for the batch, one
    /// transaction per mail.
    pub fn process_batch(&self, mails: &[(&[u8], &Origin)]) -> Result<Vec<Processed>, StoreError> {
        blocking(|| {
            let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let now = Timestamp::now();
            let batch: Vec<(&[u8], &Origin, Timestamp)> = mails.iter().map(|(r, o)| (*r, *o, now)).collect();
            self.pipeline().process_batch(&batch)
        })
    }

    /// [`Sink::process_batch`] of mails that each arrived at the time beside it.
    pub fn process_batch_at(&self, mails: &[(&[u8], &Origin, Timestamp)]) -> Result<Vec<Processed>, StoreError> {
        blocking(|| {
            let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            self.pipeline().process_batch(mails)
        })
    }

    /// Quarantines a mail over the size limit of which only `head` was read.
    pub fn process_oversized(
        &self,
        head: &[u8],
        size: u64,
        whereabouts: &str,
        origin: &Origin,
    ) -> Result<Processed, StoreError> {
        blocking(|| {
            let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            self.pipeline()
                .process_oversized(head, size, whereabouts, origin, Timestamp::now())
        })
    }

    /// Flushes the store and wakes the sender; call before marking mail processed.
    pub fn flush(&self) -> Result<(), StoreError> {
        blocking(|| self.pipeline().store.flush())?;
        self.wake_sender.notify_one();
        Ok(())
    }
}

/// A random hex string of 16 bytes (nonces, delivery ids, Message-IDs).
pub fn nonce() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a query value).
pub fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a query value); bad escapes stay as they are.
pub fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs CPU or disk work (a mail through the pipeline, a store scan, a lock
/// wait) so that it never stalls the async workers: on the multi-threaded
/// runtime the worker hands its other tasks (health checks, timers, other
/// mailboxes) to another thread first. Elsewhere it just runs `f`.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The lease name of a mailbox.
pub fn mailbox_lease(mailbox: &str) -> String {
    format!("mailbox:{mailbox}")
}

/// Waits until this instance holds `lease` (at once on a store of one
/// process), standing by meanwhile. `false` when shutting down first.
pub async fn acquire(sink: &Sink, lease: &mut Lease, shutdown: &mut watch::Receiver<bool>) -> bool {
    let mut waiting = false;
    loop {
        if lease.held(sink) {
            return true;
        }
        if !waiting {
            tracing::info!(lease = %lease.name, "held by another instance; standing by");
            waiting = true;
        }
        if let Some(m) = lease.name.strip_prefix("mailbox:") {
            sink.pipeline().metrics.mailbox_standby(m, true);
        }
        let every = Lease::interval(sink).unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return false;
        }
    }
}

/// Renews `lease` every interval; resolves when it is lost: taken by
/// another instance, or not renewed for a whole lease time (the database is
/// away). Never resolves on a store of one process.
pub async fn hold(sink: &Sink, lease: &mut Lease) {
    let Some(every) = Lease::interval(sink) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every).await;
        if !lease.held(sink) {
            return;
        }
    }
}

/// A lease of this instance's on a mailbox or the timers: `held()` takes it,
/// or renews it when a third of its time has passed ([`acquire`] and
/// [`hold`] wait on it for a task that runs while it is held).
#[derive(Debug)]
pub struct Lease {
    name: String,
    renewed: Option<Instant>,
}

impl Lease {
    /// A lease not yet taken.
    pub fn new(name: impl Into<String>) -> Lease {
        Lease {
            name: name.into(),
            renewed: None,
        }
    }

    /// Whether this instance holds the lease now, taking or renewing it as due.
    pub fn held(&mut self, sink: &Sink) -> bool {
        let store = sink.pipeline().store.clone();
        let Some(every) = store.lease_interval() else {
            return true;
        };
        if self.renewed.is_some_and(|r| r.elapsed() < every) {
            return true;
        }
        match blocking(|| store.lease(&self.name)) {
            Ok(true) => {
                if self.renewed.is_none() {
                    tracing::info!(lease = %self.name, "lease taken");
                }
                self.renewed = Some(Instant::now());
                true
            }
            Ok(false) => {
                if self.renewed.take().is_some() {
                    tracing::warn!(lease = %self.name, "lease lost to another instance");
                }
                false
            }
            Err(e) => {
                // Within a lease time of the last renewal it is still ours.
                let ours = self.renewed.is_some_and(|r| r.elapsed() < every * 3);
                tracing::warn!(lease = %self.name, error = %e, "cannot renew the lease");
                if !ours {
                    self.renewed = None;
                }
                ours
            }
        }
    }

    /// Gives it up if held (at a clean stop), so another instance takes over at once.
    pub fn release(&mut self, sink: &Sink) {
        if self.renewed.take().is_some() {
            let store = sink.pipeline().store.clone();
            if let Err(e) = blocking(|| store.release(&self.name)) {
                tracing::warn!(lease = %self.name, error = %e, "cannot release the lease");
            }
        }
    }

    /// How long to sleep at most between checks.
    pub fn interval(sink: &Sink) -> Option<Duration> {
        sink.pipeline().store.lease_interval()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_undoes_encoding_and_keeps_bad_escapes() {
        for v in ["4/0Ab-c_d.e~f", "a b+c&d=e%", "ünï", ""] {
            assert_eq!(percent_decode(&percent_encode(v)), v);
        }
        assert_eq!(percent_decode("a+b%2Fc%zz%4"), "a b/c%zz%4");
    }
}
