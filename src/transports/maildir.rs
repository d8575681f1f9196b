//! Maildir source: each file in `new/` goes through the pipeline, the store
//! is flushed, then the file moves to `cur/` with the seen flag.

use super::Sink;
use crate::pipeline::Origin;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// Watches one Maildir until shutdown.
pub async fn run(sink: Sink, mailbox: String, path: PathBuf, mut shutdown: watch::Receiver<bool>) {
    for sub in ["new", "cur", "tmp"] {
        if let Err(e) = std::fs::create_dir_all(path.join(sub)) {
            tracing::error!(mailbox = %mailbox, error = %e, "cannot create maildir folder");
        }
    }
    tracing::info!(mailbox = %mailbox, path = %path.display(), "watching maildir");
    // Instances sharing a store scan the folder one at a time.
    let mut lease = super::Lease::new(super::mailbox_lease(&mailbox));
    loop {
        if !lease.held(&sink) {
            sink.pipeline().metrics.mailbox_standby(&mailbox, true);
        } else {
            match scan_once(&sink, &mailbox, &path) {
                Ok(_) => sink
                    .pipeline()
                    .metrics
                    .mailbox_fetched(&mailbox, jiff::Timestamp::now().as_second()),
                Err(e) => {
                    sink.pipeline().metrics.mailbox_up(&mailbox, false);
                    tracing::error!(mailbox = %mailbox, error = %e, "maildir scan failed; will retry");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            lease.release(&sink);
            return;
        }
    }
}

/// Processes every file in `new/` once. Returns how many were processed.
pub fn scan_once(sink: &Sink, mailbox: &str, path: &Path) -> Result<usize, String> {
    let new = path.join("new");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
        .map_err(|e| format!("{}: {e}", new.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut total = 0;
    // A batch at a time: one blob sync and one flush each, memory bounded by the batch.
    for chunk in files.chunks(64) {
        total += scan_batch(sink, mailbox, path, chunk)?;
    }
    Ok(total)
}

fn scan_batch(sink: &Sink, mailbox: &str, path: &Path, files: &[PathBuf]) -> Result<usize, String> {
    /// A file read: path, name, bytes (or head), real size when oversized, origin.
    type Read = (PathBuf, String, Vec<u8>, Option<u64>, Origin);
    let mut read: Vec<Read> = Vec::new();
    let max = sink.pipeline().config.limits.max_message_bytes;
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Never more than the limit in memory: a larger file gives only its header section.
        match std::fs::File::open(f).and_then(|file| crate::adapters::ingest::read_bounded(file, max)) {
            Ok((raw, oversized)) => {
                // Arriving now, however long the file waited (postdesk down
                // over a weekend): a Maildir full of old mail is imported
                // with `postdesk ingest` first, which makes it history.
                let origin = Origin {
                    source_key: Some(format!("maildir:{mailbox}:{name}")),
                    ..Origin::live(mailbox)
                };
                read.push((f.clone(), name, raw, oversized, origin));
            }
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "cannot read maildir file"),
        }
    }
    let mut whole: Vec<(&[u8], &Origin)> = Vec::new();
    for (_, name, raw, oversized, origin) in &read {
        match oversized {
            Some(size) => {
                let whereabouts = format!(
                    "{}",
                    path.join("cur")
                        .join(format!("{}:2,S", name.split(':').next().unwrap_or(name)))
                        .display()
                );
                let p = sink
                    .process_oversized(raw, *size, &whereabouts, origin)
                    .map_err(|e| format!("store: {e}"))?;
                tracing::debug!(file = %name, ?p, "maildir mail processed");
            }
            None => whole.push((raw, origin)),
        }
    }
    for ((_, origin), p) in whole
        .iter()
        .zip(sink.process_batch(&whole).map_err(|e| format!("store: {e}"))?)
    {
        tracing::debug!(source = ?origin.source_key, ?p, "maildir mail processed");
    }
    let done: Vec<(PathBuf, String)> = read.into_iter().map(|(f, name, ..)| (f, name)).collect();
    if done.is_empty() {
        return Ok(0);
    }
    sink.flush().map_err(|e| format!("store flush: {e}"))?;
    for (f, name) in &done {
        let base = name.split(':').next().unwrap_or(name);
        let target = path.join("cur").join(format!("{base}:2,S"));
        if let Err(e) = std::fs::rename(f, &target) {
            tracing::warn!(file = %f.display(), error = %e, "cannot move to cur/");
        }
    }
    Ok(done.len())
}
