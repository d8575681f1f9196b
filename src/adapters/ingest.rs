//! Reading mail from files for `postdesk ingest`: `.eml` files, folders of
//! them, mbox files, Maildir folders and standard input, put in `Date` order
//! without holding the mail in memory.
//!
//! [`scan`] is the first pass: it reads each mail's header section only and
//! records its date and where it is (a file, or an offset and length in an
//! mbox). [`Entry::read`] is the second: it reads one mail when it is
//! processed. Memory follows the number of mails (a few dozen bytes each), not
//! the size of the input.

use jiff::Timestamp;
use std::io::{BufRead, Read, Seek};
use std::path::{Path, PathBuf};

/// Most bytes of a header section read to find the Date (past it, no date).
const HEAD_MAX: usize = 256 * 1024;

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

/// Where a mail is.
#[derive(Clone, Debug)]
enum Location {
    /// Already read (standard input): one mail, bounded by the limit.
    Read(Vec<u8>, Option<u64>),
    /// A whole file.
    File(PathBuf),
    /// Part of an mbox: the bytes after the `From ` line, quoted.
    Mbox(PathBuf, u64, u64),
}

/// One mail found by [`scan`]: its date and where to read it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Where it came from (for logs and quarantine entries).
    pub label: String,
    /// Its Date header, if it parses.
    pub date: Option<Timestamp>,
    /// Mail arriving now (standard input).
    pub live: bool,
    /// Its size in bytes (before mbox unquoting).
    pub size: u64,
    location: Location,
}

impl Entry {
    /// Reads the mail: whole when within `max` bytes, else only its header section.
    pub fn read(&self, max: usize) -> std::io::Result<FileMail> {
        fn with_path(p: &Path) -> impl Fn(std::io::Error) -> std::io::Error + '_ {
            move |e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
        }
        let (raw, oversized) = match &self.location {
            Location::Read(raw, oversized) => (raw.clone(), *oversized),
            Location::File(p) => {
                read_bounded(std::fs::File::open(p).map_err(with_path(p))?, max).map_err(with_path(p))?
            }
            Location::Mbox(p, offset, len) => {
                let mut f = std::fs::File::open(p).map_err(with_path(p))?;
                f.seek(std::io::SeekFrom::Start(*offset)).map_err(with_path(p))?;
                let (quoted, oversized) = read_bounded(f.take(*len), max).map_err(with_path(p))?;
                let mut raw = unquote(&quoted);
                if oversized.is_none() {
                    trim_separator(&mut raw);
                }
                (raw, oversized)
            }
        };
        Ok(FileMail {
            label: self.label.clone(),
            raw,
            date: self.date,
            oversized,
            live: self.live,
        })
    }
}

/// Finds every mail under `paths` (`-` is standard input), sorted by Date
/// (mail without a Date keeps its place at the end, in reading order). Reads
/// header sections only, except for standard input (one mail, at most
/// `max_bytes` of it kept).
pub fn scan(paths: &[PathBuf], max_bytes: usize) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let (raw, oversized) = read_bounded(std::io::stdin().lock(), max_bytes)?;
            if raw.starts_with(b"From ") && oversized.is_none() {
                // An mbox on standard input: small enough to be held, split here.
                for (i, m) in split_mbox(&raw).into_iter().enumerate() {
                    out.push(read_entry(format!("stdin#{}", i + 1), m, None, true));
                }
            } else {
                out.push(read_entry("stdin".into(), raw, oversized, true));
            }
        } else {
            scan_path(&mut out, p)?;
        }
    }
    out.sort_by_key(|m| (m.date.is_none(), m.date));
    Ok(out)
}

fn read_entry(label: String, raw: Vec<u8>, oversized: Option<u64>, live: bool) -> Entry {
    Entry {
        label,
        date: crate::adapters::inbound::date_of(&raw),
        live,
        size: oversized.unwrap_or(raw.len() as u64),
        location: Location::Read(raw, oversized),
    }
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
    raw.truncate(crate::adapters::inbound::header_section_len(&raw));
    Ok((raw, Some(size)))
}

fn scan_file(out: &mut Vec<Entry>, f: &Path) -> std::io::Result<()> {
    let label = f.display().to_string();
    let size = std::fs::metadata(f)?.len();
    let mut file = std::io::BufReader::new(std::fs::File::open(f)?);
    let head = file.fill_buf()?;
    if head.starts_with(b"From ") {
        return scan_mbox(out, f, file);
    }
    let mut head = Vec::new();
    (&mut file).take(HEAD_MAX as u64).read_to_end(&mut head)?;
    head.truncate(crate::adapters::inbound::header_section_len(&head));
    out.push(Entry {
        label,
        date: crate::adapters::inbound::date_of(&head),
        live: false,
        size,
        location: Location::File(f.to_path_buf()),
    });
    Ok(())
}

/// One pass over an mbox: each mail's offset, length and header-section date.
fn scan_mbox(out: &mut Vec<Entry>, path: &Path, mut file: impl BufRead) -> std::io::Result<()> {
    let label = path.display().to_string();
    let mut offset = 0u64;
    let mut line = Vec::new();
    let mut prev_blank = true;
    // The mail being read: its start, its header section so far, whether that ended.
    let mut current: Option<(u64, Vec<u8>, bool)> = None;
    let mut n = 0;
    let mut finish = |out: &mut Vec<Entry>, current: Option<(u64, Vec<u8>, bool)>, end: u64| {
        if let Some((start, head, _)) = current {
            n += 1;
            out.push(Entry {
                label: format!("{label}#{n}"),
                date: crate::adapters::inbound::date_of(&unquote(&head)),
                live: false,
                size: end - start,
                location: Location::Mbox(path.to_path_buf(), start, end - start),
            });
        }
    };
    loop {
        line.clear();
        let read = file.read_until(b'\n', &mut line)? as u64;
        if read == 0 {
            break;
        }
        if line.starts_with(b"From ") && prev_blank {
            finish(out, current.take(), offset);
            current = Some((offset + read, Vec::new(), false));
            prev_blank = false;
            offset += read;
            continue;
        }
        let blank = line == b"\n" || line == b"\r\n";
        if let Some((_, head, done)) = current.as_mut()
            && !*done
        {
            if blank || head.len() + line.len() > HEAD_MAX {
                *done = true;
            } else {
                head.extend_from_slice(&line);
            }
        }
        prev_blank = blank;
        offset += read;
    }
    finish(out, current.take(), offset);
    Ok(())
}

fn scan_path(out: &mut Vec<Entry>, path: &Path) -> std::io::Result<()> {
    let meta =
        std::fs::metadata(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if meta.is_dir() {
        if path.join("cur").is_dir() && path.join("new").is_dir() {
            for sub in ["cur", "new"] {
                for f in sorted_files(&path.join(sub))? {
                    scan_file(out, &f)?;
                }
            }
        } else {
            for f in sorted_files(path)? {
                if f.is_dir() {
                    scan_path(out, &f)?;
                } else {
                    scan_file(out, &f)?;
                }
            }
        }
    } else {
        scan_file(out, path)?;
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

/// Undoes mbox `>From ` quoting (mboxo and mboxrd) line by line.
fn unquote(data: &[u8]) -> Vec<u8> {
    static QUOTED: std::sync::LazyLock<regex::bytes::Regex> =
        std::sync::LazyLock::new(|| regex::bytes::Regex::new(r"(?m)^>+From ").expect("a valid pattern"));
    // Most mails have no quoted line: one search, one copy.
    if !QUOTED.is_match(data) {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|&b| b == b'\n') {
        let gts = line.iter().take_while(|&&b| b == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Splits an mbox (mboxo or mboxrd) held in memory into mails, undoing `>From ` quoting.
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    scan_mbox(&mut entries, Path::new("-"), data).expect("reading memory cannot fail");
    entries
        .iter()
        .map(|e| match &e.location {
            Location::Mbox(_, start, len) => {
                let mut m = unquote(&data[*start as usize..(*start + *len) as usize]);
                trim_separator(&mut m);
                m
            }
            _ => unreachable!("an mbox holds mbox entries"),
        })
        .collect()
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

    #[test]
    fn mbox_on_disk_is_read_by_offset_in_date_order() {
        let dir = std::env::temp_dir().join(format!("postdesk-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("box.mbox");
        std::fs::write(
            &path,
            b"From a@x Mon Jan  1 00:00:00 2024\nDate: Tue, 02 Jan 2024 10:00:00 +0000\nSubject: later\n\n>From here\n\nFrom b@x Mon Jan  1 00:00:00 2024\nSubject: earlier\nDate: Mon, 01 Jan 2024 10:00:00 +0000\n\nbody\n",
        )
        .unwrap();
        let entries = scan(std::slice::from_ref(&path), 1 << 20).unwrap();
        assert_eq!(entries.len(), 2);
        let first = entries[0].read(1 << 20).unwrap();
        assert!(
            first.raw.starts_with(b"Subject: earlier"),
            "{:?}",
            String::from_utf8_lossy(&first.raw)
        );
        let second = entries[1].read(1 << 20).unwrap();
        assert!(
            second.raw.ends_with(b"\nFrom here\n"),
            "{:?}",
            String::from_utf8_lossy(&second.raw)
        );
        // Over the limit: only the header section.
        let small = entries[1].read(60).unwrap();
        assert_eq!(small.oversized, Some(entries[1].size));
        assert!(small.raw.ends_with(b"Subject: later\n\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
