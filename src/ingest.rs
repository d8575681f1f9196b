//! Reading mail from files for `postdesk ingest`: `.eml` files, folders of
//! them, mbox files, Maildir folders and standard input, put in `Date` order.

use jiff::Timestamp;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One mail read from a file.
#[derive(Clone, Debug)]
pub struct FileMail {
    /// Where it came from (for logs and quarantine entries).
    pub label: String,
    /// The raw bytes.
    pub raw: Vec<u8>,
    /// Its Date header, if it parses.
    pub date: Option<Timestamp>,
    /// Set when the mail is larger than the limit: its real size. `raw` then
    /// holds only its header section, never the whole mail.
    pub oversized: Option<u64>,
    /// Mail arriving now (standard input: an MTA's pipe), not a backfill: its
    /// arrival time is now, whatever its `Date` says.
    pub live: bool,
}

/// Reads every mail under `paths` (`-` is standard input), sorted by Date
/// (mail without a Date keeps its place at the end, in reading order). A
/// single mail over `max_bytes` is never read whole: only its header section.
pub fn collect(paths: &[PathBuf], max_bytes: usize) -> std::io::Result<Vec<FileMail>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let (raw, oversized) = read_bounded(std::io::stdin().lock(), max_bytes)?;
            let from = out.len();
            match oversized {
                Some(size) => out.push(oversized_mail("stdin", raw, size)),
                None => push_file(&mut out, "stdin", raw),
            }
            for m in &mut out[from..] {
                m.live = true;
            }
        } else {
            read_path(&mut out, p, max_bytes)?;
        }
    }
    out.sort_by_key(|m| (m.date.is_none(), m.date));
    Ok(out)
}

/// Reads at most `max` bytes; past that keeps only the header section and
/// reads the rest away (so a pipe's writer is not cut off), returning the size.
pub fn read_bounded(reader: impl Read, max: usize) -> std::io::Result<(Vec<u8>, Option<u64>)> {
    let mut reader = reader;
    let mut raw = Vec::new();
    (&mut reader).take(max as u64 + 1).read_to_end(&mut raw)?;
    if raw.len() <= max {
        return Ok((raw, None));
    }
    let rest = std::io::copy(&mut reader, &mut std::io::sink())?;
    let size = raw.len() as u64 + rest;
    raw.truncate(crate::inbound::header_section_len(&raw));
    Ok((raw, Some(size)))
}

fn oversized_mail(label: &str, head: Vec<u8>, size: u64) -> FileMail {
    FileMail {
        label: label.to_string(),
        date: crate::inbound::date_of(&head),
        raw: head,
        oversized: Some(size),
        live: false,
    }
}

/// One file: whole when it is within `max` bytes or an mbox (split below),
/// else only its header section.
fn read_file(out: &mut Vec<FileMail>, f: &Path, max: usize) -> std::io::Result<()> {
    let label = f.display().to_string();
    let size = std::fs::metadata(f)?.len();
    if size > max as u64 {
        let mut file = std::fs::File::open(f)?;
        let mut head = vec![0u8; 5];
        let n = file.read(&mut head)?;
        if &head[..n] != b"From " {
            let (head, _) = read_bounded(std::fs::File::open(f)?, max)?;
            out.push(oversized_mail(&label, head, size));
            return Ok(());
        }
    }
    push_file(out, &label, std::fs::read(f)?);
    Ok(())
}

fn read_path(out: &mut Vec<FileMail>, path: &Path, max: usize) -> std::io::Result<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if meta.is_dir() {
        if path.join("cur").is_dir() && path.join("new").is_dir() {
            for sub in ["cur", "new"] {
                for f in sorted_files(&path.join(sub))? {
                    read_file(out, &f, max)?;
                }
            }
        } else {
            for f in sorted_files(path)? {
                if f.is_dir() {
                    read_path(out, &f, max)?;
                } else {
                    read_file(out, &f, max)?;
                }
            }
        }
    } else {
        read_file(out, path, max)?;
    }
    Ok(())
}

fn sorted_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    v.sort();
    Ok(v)
}

fn push_file(out: &mut Vec<FileMail>, label: &str, raw: Vec<u8>) {
    if raw.starts_with(b"From ") {
        for (i, m) in split_mbox(&raw).into_iter().enumerate() {
            out.push(FileMail {
                label: format!("{label}#{}", i + 1),
                date: crate::inbound::date_of(&m),
                raw: m,
                oversized: None,
                live: false,
            });
        }
    } else {
        out.push(FileMail {
            label: label.to_string(),
            date: crate::inbound::date_of(&raw),
            raw,
            oversized: None,
            live: false,
        });
    }
}

/// Splits an mbox (mboxo or mboxrd) into mails, undoing `>From ` quoting.
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    let mut mails = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut prev_blank = true;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") && prev_blank {
            if let Some(mut m) = current.take() {
                trim_separator(&mut m);
                mails.push(m);
            }
            current = Some(Vec::new());
            prev_blank = false;
            continue;
        }
        let Some(m) = current.as_mut() else { continue };
        let gts = line.iter().take_while(|&&b| b == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            m.extend_from_slice(&line[1..]);
        } else {
            m.extend_from_slice(line);
        }
        prev_blank = line == b"\n" || line == b"\r\n";
    }
    if let Some(mut m) = current {
        trim_separator(&mut m);
        mails.push(m);
    }
    mails
}

fn trim_separator(m: &mut Vec<u8>) {
    if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    } else if m.ends_with(b"\n\n") {
        m.truncate(m.len() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_split_and_unquote() {
        let mbox = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\n>From the start\nbody\n\nFrom b@x Mon Jan  1 00:00:00 2024\nSubject: two\n\nx\n";
        let mails = split_mbox(mbox);
        assert_eq!(mails.len(), 2);
        assert_eq!(mails[0], b"Subject: one\n\nFrom the start\nbody\n");
        assert_eq!(mails[1], b"Subject: two\n\nx\n");
    }
}
