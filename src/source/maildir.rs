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
    loop {
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
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
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
    let mut done = Vec::new();
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Never more than the limit in memory: a larger file gives only its header section.
        let max = sink.pipeline().config.limits.max_message_bytes;
        let read = std::fs::File::open(f).and_then(|file| crate::ingest::read_bounded(file, max));
        let (raw, oversized) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "cannot read maildir file");
                continue;
            }
        };
        let origin = Origin {
            mailbox: mailbox.to_string(),
            source_key: Some(format!("maildir:{mailbox}:{name}")),
            position: None,
        };
        let result = match oversized {
            Some(size) => {
                let whereabouts = format!(
                    "{}",
                    path.join("cur")
                        .join(format!("{}:2,S", name.split(':').next().unwrap_or(&name)))
                        .display()
                );
                sink.process_oversized(&raw, size, &whereabouts, &origin)
            }
            None => sink.process(&raw, &origin),
        };
        match result {
            Ok(p) => {
                tracing::debug!(file = %name, ?p, "maildir mail processed");
                done.push((f.clone(), name));
            }
            Err(e) => return Err(format!("store: {e}")),
        }
    }
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
