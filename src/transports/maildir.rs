//! Maildir source: each file in `new/` goes through the pipeline, the store
//! is flushed, then the file moves to `cur/` with the seen flag. When
//! postdesk takes a Maildir over (it never read mail from it), the mail that
//! waited in `new/` longer than `[automation] backfill_window` (by the
//! file's time of delivery) is history, as for an IMAP mailbox.

use super::Sink;
use crate::pipeline::Origin;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// The wait before the next scan after `failures` failed in a row: half a
/// second, doubled per failure, half a minute at most.
fn retry_wait(failures: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1 << failures.min(6))
        .min(Duration::from_secs(30))
}

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
    // Whether postdesk is taking the Maildir over: asked of the store once
    // the lease is held, then kept here.
    let mut taking_over: Option<bool> = None;
    // Scans failed in a row (a full disk, say): the wait doubles from half a
    // second to half a minute, and the log says so at the 1st, 2nd, 4th, 8th…
    let mut failures: u32 = 0;
    loop {
        if !lease.held(&sink) {
            sink.pipeline().metrics.mailbox_standby(&mailbox, true);
            taking_over = None;
        } else {
            match scan(&sink, &mailbox, &path, &mut taking_over) {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!(mailbox = %mailbox, failures, "maildir scan works again");
                        failures = 0;
                    }
                    sink.pipeline()
                        .metrics
                        .mailbox_fetched(&mailbox, jiff::Timestamp::now().as_second())
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    sink.pipeline().metrics.mailbox_up(&mailbox, false);
                    if failures.is_power_of_two() {
                        tracing::error!(mailbox = %mailbox, error = %e, failures, retry_in_ms = retry_wait(failures).as_millis() as u64, "maildir scan failed; will retry");
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_wait(failures)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            lease.release(&sink);
            return;
        }
    }
}

/// Whether postdesk takes the Maildir of `mailbox` over, from its stored
/// position: one that says so, or none where no mail from this Maildir was
/// ever processed (a desk that read it before this was stored goes on
/// live). A takeover is stored before any of its mail, so that a restart in
/// its middle goes on with it.
fn takeover(sink: &Sink, mailbox: &str) -> Result<bool, String> {
    let store = |e: crate::adapters::store::StoreError| format!("store: {e}");
    let pipeline = sink.pipeline();
    if let Some(p) = pipeline.store.position(mailbox).map_err(store)? {
        return Ok(p.taking_over);
    }
    let taking_over = !pipeline
        .store
        .has_source_prefix(&source_prefix(mailbox))
        .map_err(store)?;
    pipeline
        .set_position(mailbox, maildir_position(taking_over))
        .map_err(store)?;
    if taking_over {
        tracing::info!(
            mailbox,
            "taking the maildir over: mail that waited in new/ past backfill_window is history"
        );
    }
    Ok(taking_over)
}

/// A Maildir's stored position: only whether it is being taken over (no
/// UIDs).
fn maildir_position(taking_over: bool) -> crate::adapters::store::Position {
    crate::adapters::store::Position {
        uid_validity: 0,
        last_uid: 0,
        taking_over,
    }
}

/// The start of the source keys of a Maildir's mail.
fn source_prefix(mailbox: &str) -> String {
    format!("maildir:{mailbox}:")
}

/// One scan of `new/`, taking the Maildir over when postdesk never read
/// it: once `new/` has been read to its end, what it finds is live.
fn scan(sink: &Sink, mailbox: &str, path: &Path, taking_over: &mut Option<bool>) -> Result<usize, String> {
    let over = match *taking_over {
        Some(t) => t,
        None => *taking_over.insert(takeover(sink, mailbox)?),
    };
    let n = scan_once(sink, mailbox, path, over)?;
    if over {
        sink.pipeline()
            .set_position(mailbox, maildir_position(false))
            .map_err(|e| format!("store: {e}"))?;
        *taking_over = Some(false);
        tracing::info!(
            mailbox,
            "maildir taken over: read to its end; what arrives from now on is live"
        );
    }
    Ok(n)
}

/// Processes every file in `new/` once (while `taking_over`, what waited
/// past the backfill window as history). Returns how many were processed.
pub fn scan_once(sink: &Sink, mailbox: &str, path: &Path, taking_over: bool) -> Result<usize, String> {
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
        total += scan_batch(sink, mailbox, path, chunk, taking_over)?;
    }
    Ok(total)
}

fn scan_batch(sink: &Sink, mailbox: &str, path: &Path, files: &[PathBuf], taking_over: bool) -> Result<usize, String> {
    /// A file read: path, name, bytes (or head), real size when oversized, origin, arrival.
    type Read = (PathBuf, String, Vec<u8>, Option<u64>, Origin, jiff::Timestamp);
    let mut read: Vec<Read> = Vec::new();
    let max = sink.pipeline().config.limits.max_message_bytes;
    let window = sink.pipeline().config.automation.backfill_window;
    let now = jiff::Timestamp::now();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Never more than the limit in memory: a larger file gives only its header section.
        match std::fs::File::open(f).and_then(|file| {
            // Delivered when the file was written (its modification time).
            let delivered = file.metadata().and_then(|m| m.modified()).ok();
            crate::adapters::ingest::read_bounded(file, max).map(|r| (r, delivered))
        }) {
            Ok(((raw, oversized), delivered)) => {
                // Arriving now, however long the file waited (postdesk down
                // over a weekend), but while postdesk takes the Maildir over.
                let delivered = delivered
                    .filter(|_| taking_over)
                    .and_then(|t| jiff::Timestamp::try_from(t).ok());
                let (origin, at) = Origin::delivered(mailbox, delivered, now, window);
                let origin = Origin {
                    source_key: Some(format!("{}{name}", source_prefix(mailbox))),
                    ..origin
                };
                read.push((f.clone(), name, raw, oversized, origin, at));
            }
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "cannot read maildir file"),
        }
    }
    let mut whole: Vec<(&[u8], &Origin, jiff::Timestamp)> = Vec::new();
    for (_, name, raw, oversized, origin, at) in &read {
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
            None => whole.push((raw, origin, *at)),
        }
    }
    for ((_, origin, _), p) in whole
        .iter()
        .zip(sink.process_batch_at(&whole).map_err(|e| format!("store: {e}"))?)
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

#[cfg(test)]
mod tests {
    use super::retry_wait;
    use std::time::Duration;

    #[test]
    fn a_failing_scan_waits_twice_as_long_each_time_up_to_half_a_minute() {
        let waits: Vec<Duration> = (0..9).map(retry_wait).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            waits,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                ms(30000),
                ms(30000),
                ms(30000)
            ]
        );
        assert_eq!(retry_wait(u32::MAX), ms(30000));
    }
}
