//! Transports: mail in from IMAP folders and Maildirs, mail out over SMTP
//! (or to files), and the HTTP API.
//!
//! Sources only move bytes and positions; they hand each mail to the
//! pipeline through a [`Sink`], flush the store, and only then mark the mail
//! processed on the server or on disk.

pub mod http;
pub mod imap;
pub mod maildir;
pub mod smtp;

use crate::adapters::store::StoreError;
use crate::pipeline::{Origin, Pipeline, Processed};
use jiff::Timestamp;
use std::sync::{Arc, Mutex, RwLock};

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

    /// Processes a batch of mails in order under the writer lock, off the
    /// async workers: one blob sync for the batch, one transaction per mail.
    pub fn process_batch(&self, mails: &[(&[u8], &Origin)]) -> Result<Vec<Processed>, StoreError> {
        blocking(|| {
            let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let now = Timestamp::now();
            let batch: Vec<(&[u8], &Origin, Timestamp)> = mails.iter().map(|(r, o)| (*r, *o, now)).collect();
            self.pipeline().process_batch(&batch)
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
