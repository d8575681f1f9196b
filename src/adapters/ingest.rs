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

/// Most bytes of a header section read to find the Date or Received (past it, no date).
const HEAD_MAX: usize = 256 * 1024;

/// One mail read from a file.
#[derive(Clone, Debug)]
pub struct FileMail {
    /// Where it came from (for logs and quarantine entries).
    pub label: String,
    /// The raw bytes.
    pub raw: Vec<u8>,
    /// When it arrived: its Date header, else its topmost Received's date ([`crate::adapters::inbound::arrival_of`]).
    pub date: Option<Timestamp>,
    /// Set when the mail is larger than the limit: its real size. `raw` then
    /// holds only its header section, never the whole mail.
    pub oversized: Option<u64>,
    /// Mail arriving now (standard input: an MTA's pipe), not a backfill: its
    /// arrival time is now, whatever its `Date` says.
    pub live: bool,
}

/// Where a mail is. An mbox's mails share its path: an entry holds no
/// memory of its own, so a backfill of a million mails keeps tens of
/// megabytes of entries, not hundreds.
#[derive(Clone, Debug)]
enum Location {
    /// Already read (standard input).
    Read(Box<Held>),
    /// A whole file.
    File(Box<Path>),
    /// The `n`th mail of an mbox (from 1): the bytes after its `From ` line, quoted.
    Mbox {
        path: std::sync::Arc<Path>,
        offset: u64,
        len: u64,
        n: u32,
    },
}

/// A mail read already (standard input): bounded by the limit.
#[derive(Clone, Debug)]
struct Held {
    raw: Vec<u8>,
    /// Its real size when over the limit (`raw` then holds its header section).
    oversized: Option<u64>,
    label: String,
}

/// One mail found by [`scan`]: its date and where to read it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// When it arrived: its Date header, else its topmost Received's date.
    pub date: Option<Timestamp>,
    /// Mail arriving now (standard input).
    pub live: bool,
    /// Its size in bytes (before mbox unquoting).
    pub size: u64,
    location: Location,
}

impl Entry {
    /// Where it came from, for logs and quarantine entries: a file's path, an
    /// mbox's path and `#` the mail's number in it, or `stdin`.
    pub fn label(&self) -> String {
        match &self.location {
            Location::Read(held) => held.label.clone(),
            Location::File(p) => p.display().to_string(),
            Location::Mbox { path, n, .. } => format!("{}#{n}", path.display()),
        }
    }

    /// Reads the mail: whole when within `max` bytes, else only its header section.
    pub fn read(&self, max: usize) -> std::io::Result<FileMail> {
        fn with_path(p: &Path) -> impl Fn(std::io::Error) -> std::io::Error + '_ {
            move |e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
        }
        let (raw, oversized) = match &self.location {
            Location::Read(held) => (held.raw.clone(), held.oversized),
            Location::File(p) => {
                read_bounded(std::fs::File::open(p).map_err(with_path(p))?, max).map_err(with_path(p))?
            }
            Location::Mbox {
                path: p, offset, len, ..
            } => {
                let mut f = std::fs::File::open(p).map_err(with_path(p))?;
                f.seek(std::io::SeekFrom::Start(*offset)).map_err(with_path(p))?;
                let mut quoted = Vec::with_capacity((*len).min(max as u64 + 1) as usize);
                let oversized = read_bounded_into(f.take(*len), max, &mut quoted).map_err(with_path(p))?;
                let mut raw = match unquote(&quoted) {
                    std::borrow::Cow::Borrowed(_) => quoted,
                    std::borrow::Cow::Owned(unquoted) => unquoted,
                };
                if oversized.is_none() {
                    trim_separator(&mut raw);
                }
                (raw, oversized)
            }
        };
        Ok(FileMail {
            label: self.label(),
            raw,
            date: self.date,
            oversized,
            live: self.live,
        })
    }
}

/// Finds every mail under `paths` (`-` is standard input), sorted by arrival
/// (Date, else the topmost Received; mail with neither keeps its place at the
/// end, in reading order). Reads
/// header sections only, except for standard input (one mail, at most
/// `max_bytes` of it kept).
pub fn scan(paths: &[PathBuf], max_bytes: usize) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let (raw, oversized) = read_bounded(std::io::stdin().lock(), max_bytes)?;
            if raw.is_empty() {
                tracing::warn!("empty standard input: no mail in it");
            } else if raw.starts_with(b"From ") && oversized.is_none() {
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
        date: crate::adapters::inbound::arrival_of(&raw),
        live,
        size: oversized.unwrap_or(raw.len() as u64),
        location: Location::Read(Box::new(Held { raw, oversized, label })),
    }
}

/// Reads at most `max` bytes; past that keeps only the header section and
/// reads the rest away (so a pipe's writer is not cut off), returning the size.
pub fn read_bounded(reader: impl Read, max: usize) -> std::io::Result<(Vec<u8>, Option<u64>)> {
    let mut raw = Vec::new();
    let oversized = read_bounded_into(reader, max, &mut raw)?;
    Ok((raw, oversized))
}

/// [`read_bounded`] into `raw` (empty, sized by the caller when it knows the size).
fn read_bounded_into(mut reader: impl Read, max: usize, raw: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
    (&mut reader).take(max as u64 + 1).read_to_end(raw)?;
    if raw.len() <= max {
        return Ok(None);
    }
    let rest = std::io::copy(&mut reader, &mut std::io::sink())?;
    let size = raw.len() as u64 + rest;
    raw.truncate(crate::adapters::inbound::header_section_len(raw));
    Ok(Some(size))
}

fn scan_file(out: &mut Vec<Entry>, f: &Path) -> std::io::Result<()> {
    let size = std::fs::metadata(f)?.len();
    if size == 0 {
        // An empty mbox (a folder with no mail) holds none; it is not a mail
        // to quarantine.
        tracing::warn!(file = %f.display(), "empty file: no mail in it");
        return Ok(());
    }
    let mut file = std::io::BufReader::new(std::fs::File::open(f)?);
    let head = file.fill_buf()?;
    if head.starts_with(b"From ") {
        return scan_mbox(out, f, file, SCAN_CHUNK);
    }
    let mut head = Vec::new();
    (&mut file).take(HEAD_MAX as u64).read_to_end(&mut head)?;
    head.truncate(crate::adapters::inbound::header_section_len(&head));
    out.push(Entry {
        date: crate::adapters::inbound::arrival_of(&head),
        live: false,
        size,
        location: Location::File(f.into()),
    });
    Ok(())
}

/// One pass over an mbox: each mail's offset, length and header-section date.
///
/// A mail's header section is read line by line; its body is skipped by a
/// search for the next `\nFrom ` (most of an mbox is bodies, and most bodies
/// are attachments), so the pass costs little more than reading the file.
fn scan_mbox(out: &mut Vec<Entry>, path: &Path, file: impl Read, chunk: usize) -> std::io::Result<()> {
    let path: std::sync::Arc<Path> = path.into();
    let mut n = 0;
    let mut finish = |out: &mut Vec<Entry>, current: Option<(u64, Vec<u8>)>, end: u64| {
        if let Some((start, head)) = current {
            n += 1;
            out.push(Entry {
                date: crate::adapters::inbound::arrival_of(&unquote(&head)),
                live: false,
                size: end - start,
                location: Location::Mbox {
                    path: path.clone(),
                    offset: start,
                    len: end - start,
                    n,
                },
            });
        }
    };
    let mut scanner = MboxScanner::new(file, chunk);
    let mut current = None;
    while let Some(found) = scanner.next_mail()? {
        finish(out, current.take(), found.separator);
        current = Some((found.start, found.head));
    }
    finish(out, current, scanner.end());
    Ok(())
}

/// How much of an mbox is read at a time by [`MboxScanner`].
const SCAN_CHUNK: usize = 1 << 20;

/// A mail found by [`MboxScanner`].
struct Found {
    /// Where its `From ` line starts (the previous mail ends there).
    separator: u64,
    /// Where the mail starts, after its `From ` line.
    start: u64,
    /// Its header section, still quoted (at most [`HEAD_MAX`] bytes).
    head: Vec<u8>,
}

/// A line read by [`MboxScanner`].
enum Line {
    /// Where it is in the window.
    Text(std::ops::Range<usize>),
    /// Too long to hold: read past.
    Skipped,
}

/// Finds the mails of an mbox (mboxo or mboxrd): a `From ` line after a blank
/// line (or first in the file) starts one. Reads the file once, a window at
/// a time; memory is a window or two and one header section, whatever the
/// lines' lengths.
struct MboxScanner<R> {
    file: R,
    chunk: usize,
    /// The window: `buf[..len]` holds the file from offset `base`.
    buf: Vec<u8>,
    len: usize,
    base: u64,
    /// Where scanning resumes in the window.
    pos: usize,
    /// Whether `pos` starts a line (false after a too long line was dropped).
    line_start: bool,
    /// Whether the line before `pos`'s line is blank (the file's start counts as one).
    prev_blank: bool,
    eof: bool,
    finder: memchr::memmem::Finder<'static>,
}

/// A line that ends at `buf[nl]` (a `\n`) and started at or before `pos`
/// (at `pos` when `line_start`): whether it is blank, `\n` or `\r\n`.
fn blank_line_ending(buf: &[u8], pos: usize, line_start: bool, nl: usize) -> bool {
    match &buf[pos..nl] {
        [] => line_start,
        [.., b'\n'] | [.., b'\n', b'\r'] => true,
        [b'\r'] => line_start,
        _ => false,
    }
}

impl<R: Read> MboxScanner<R> {
    fn new(file: R, chunk: usize) -> Self {
        MboxScanner {
            file,
            chunk: chunk.max(8),
            buf: Vec::new(),
            len: 0,
            base: 0,
            pos: 0,
            line_start: true,
            prev_blank: true,
            eof: false,
            finder: memchr::memmem::Finder::new(b"\nFrom "),
        }
    }

    /// The file's size, once [`MboxScanner::next_mail`] returned `None`.
    fn end(&self) -> u64 {
        self.base + self.len as u64
    }

    /// Drops what is before `pos` and reads a window more; false at the end of the file.
    fn refill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.base += self.pos as u64;
        self.pos = 0;
        if self.buf.len() < self.len + self.chunk {
            self.buf.resize(self.len + self.chunk, 0);
        }
        let old = self.len;
        while self.len < old + self.chunk {
            match self.file.read(&mut self.buf[self.len..old + self.chunk]) {
                Ok(0) => break,
                Ok(k) => self.len += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.eof = self.len == old;
        Ok(!self.eof)
    }

    /// The line at `pos` with its line end (the file's last line may have
    /// none), reading on as needed; `None` at the end of the file. A line
    /// over [`HEAD_MAX`] and a window long is read past, never held:
    /// [`Line::Skipped`], with `pos` after it.
    fn line(&mut self) -> std::io::Result<Option<Line>> {
        // Bytes after `pos` already searched for a line end (kept by a refill).
        let mut searched = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.pos + searched..self.len]) {
                return Ok(Some(Line::Text(self.pos..self.pos + searched + i + 1)));
            }
            searched = self.len - self.pos;
            if searched > HEAD_MAX + self.chunk {
                self.finish_long_line()?;
                return Ok(Some(Line::Skipped));
            }
            if !self.refill()? {
                let rest = self.pos..self.len;
                return Ok((!rest.is_empty()).then_some(Line::Text(rest)));
            }
        }
    }

    /// Skips the rest of a line that was too long to hold, past its line end.
    fn finish_long_line(&mut self) -> std::io::Result<()> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.pos..self.len]) {
                self.pos += i + 1;
                self.line_start = true;
                self.prev_blank = false;
                return Ok(());
            }
            self.pos = self.len;
            if !self.refill()? {
                return Ok(());
            }
        }
    }

    /// Whether `pos` starts a line that begins with `From ` (reading on as needed).
    fn at_from(&mut self) -> std::io::Result<bool> {
        if !self.line_start {
            return Ok(false);
        }
        while self.len - self.pos < 5 {
            if !self.refill()? {
                break;
            }
        }
        Ok(self.buf[self.pos..self.len].starts_with(b"From "))
    }

    /// Moves `pos` to the next `From ` line after a blank line; false at the end of the file.
    fn skip_to_separator(&mut self) -> std::io::Result<bool> {
        loop {
            if self.prev_blank && self.at_from()? {
                return Ok(true);
            }
            // Each `\nFrom ` past `pos` is a candidate: a separator when the
            // line ending at its `\n` is blank.
            let mut from = self.pos;
            while let Some(i) = self.finder.find(&self.buf[from..self.len]) {
                let nl = from + i;
                if blank_line_ending(&self.buf, self.pos, self.line_start, nl) {
                    self.pos = nl + 1;
                    self.line_start = true;
                    self.prev_blank = true;
                    return Ok(true);
                }
                from = nl + 1;
            }
            // None in the window: go on from its last line start, where a
            // `From ` cut by the window's edge is then read whole.
            match memchr::memrchr(b'\n', &self.buf[self.pos..self.len]) {
                Some(i) => {
                    let blank = blank_line_ending(&self.buf, self.pos, self.line_start, self.pos + i);
                    self.pos += i + 1;
                    self.line_start = true;
                    self.prev_blank = blank;
                }
                None if self.len - self.pos > self.chunk => {
                    // A line longer than a window: never blank, never a separator.
                    self.pos = self.len;
                    self.line_start = false;
                    self.prev_blank = false;
                }
                None => {}
            }
            if !self.refill()? {
                return Ok(false);
            }
        }
    }

    /// The next mail: its separator, where it starts and its header section.
    fn next_mail(&mut self) -> std::io::Result<Option<Found>> {
        if !self.skip_to_separator()? {
            return Ok(None);
        }
        let separator = self.base + self.pos as u64;
        let start = match self.line()? {
            None => return Ok(None),
            Some(Line::Text(r)) => {
                self.pos = r.end;
                self.line_start = true;
                self.prev_blank = false;
                self.base + r.end as u64
            }
            // A `From ` line too long to hold: the mail starts past its end.
            Some(Line::Skipped) => self.base + self.pos as u64,
        };
        // The header section: up to a blank line, or the line that would
        // take it past `HEAD_MAX`. (A `From ` line in it follows no blank
        // line, so it is a header line.)
        let mut head = Vec::new();
        while let Some(line) = self.line()? {
            let Line::Text(r) = line else { break };
            let text = &self.buf[r.clone()];
            let blank = text == b"\n" || text == b"\r\n";
            let full = head.len() + text.len() > HEAD_MAX;
            if !blank && !full {
                head.extend_from_slice(text);
            }
            self.pos = r.end;
            self.prev_blank = blank;
            if blank || full {
                break;
            }
        }
        Ok(Some(Found { separator, start, head }))
    }
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
fn unquote(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    static QUOTED: std::sync::LazyLock<regex::bytes::Regex> =
        std::sync::LazyLock::new(|| regex::bytes::Regex::new(r"(?m)^>+From ").expect("a valid pattern"));
    // Most mails have no quoted line: one search, one copy.
    if !QUOTED.is_match(data) {
        return std::borrow::Cow::Borrowed(data);
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
    std::borrow::Cow::Owned(out)
}

/// Splits an mbox (mboxo or mboxrd) held in memory into mails, undoing `>From ` quoting.
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    scan_mbox(&mut entries, Path::new("-"), data, SCAN_CHUNK).expect("reading memory cannot fail");
    entries
        .iter()
        .map(|e| match &e.location {
            Location::Mbox { offset, len, .. } => {
                let mut m = unquote(&data[*offset as usize..(*offset + *len) as usize]).into_owned();
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

    /// The line-by-line reading `scan_mbox` had before it searched bodies:
    /// (start, end, header section) per mail, the model the scanner must match.
    fn scan_by_lines(data: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        let mut prev_blank = true;
        let mut current: Option<(u64, Vec<u8>, bool)> = None;
        for line in data.split_inclusive(|&b| b == b'\n') {
            let read = line.len() as u64;
            if line.starts_with(b"From ") && prev_blank {
                if let Some((start, head, _)) = current.take() {
                    out.push((start, offset, head));
                }
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
                    head.extend_from_slice(line);
                }
            }
            prev_blank = blank;
            offset += read;
        }
        if let Some((start, head, _)) = current.take() {
            out.push((start, offset, head));
        }
        out
    }

    fn scan_in_windows(data: &[u8], chunk: usize) -> Vec<(u64, u64, Vec<u8>)> {
        let mut scanner = MboxScanner::new(data, chunk);
        let mut out: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        while let Some(found) = scanner.next_mail().unwrap() {
            if let Some(last) = out.last_mut() {
                last.1 = found.separator;
            }
            out.push((found.start, 0, found.head));
        }
        if let Some(last) = out.last_mut() {
            last.1 = scanner.end();
        }
        out
    }

    proptest::proptest! {
        // Failures are not written to a proptest-regressions folder: the
        // one found is kept below as a case of its own.
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Mboxes made of the pieces that matter (separators, blank lines of
        /// both line ends, quoted and unquoted `From `, near misses) split
        /// into the same mails with the same header sections, whatever the
        /// window's size.
        #[test]
        fn the_scanner_finds_what_reading_line_by_line_finds(
            pieces in proptest::collection::vec(0usize..12, 0..60),
            chunk in 1usize..40,
        ) {
            const PIECES: [&[u8]; 12] = [
                b"From a@x Mon Jan  1 00:00:00 2024\n",
                b"\n",
                b"\r\n",
                b"From ",
                b">From here\n",
                b"Date: Tue, 02 Jan 2024 10:00:00 +0000\n",
                b"Subject: s\r\n",
                b"x",
                b"\r",
                b"Fro",
                b"m \n",
                b"body line\n",
            ];
            let data: Vec<u8> = pieces.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
            proptest::prop_assert_eq!(scan_in_windows(&data, chunk), scan_by_lines(&data));
        }
    }

    #[test]
    fn a_separator_after_two_line_ends_at_a_windows_start_is_found() {
        // What the property test once found: the blank line before `From `
        // is the window's second byte, after a first line that is blank too.
        let data = b"\n\nFrom ";
        assert_eq!(scan_by_lines(data), [(7, 7, Vec::new())]);
        assert_eq!(scan_in_windows(data, 1), scan_by_lines(data));
    }

    #[test]
    fn lines_longer_than_a_window_are_read_past() {
        let long = vec![b'a'; HEAD_MAX + 3000];
        let mut data = Vec::new();
        for (head_line, body_line) in [(&b"X: y\n"[..], &long[..]), (&long[..], &b"z\n"[..])] {
            data.extend_from_slice(b"From a@x Mon Jan  1 00:00:00 2024\nSubject: s\n");
            data.extend_from_slice(head_line);
            data.extend_from_slice(b"\n\nbody\n");
            data.extend_from_slice(body_line);
            data.extend_from_slice(b"\n\n");
        }
        data.extend_from_slice(b"From b@x Mon Jan  1 00:00:00 2024\nSubject: last\n\n");
        data.extend_from_slice(&long);
        let model = scan_by_lines(&data);
        assert_eq!(model.len(), 3);
        for chunk in [64, 4096, SCAN_CHUNK] {
            assert_eq!(scan_in_windows(&data, chunk), model, "windows of {chunk} bytes");
        }
    }

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
        // Labels name the mail's place in its mbox (in the file's order, not the date's).
        let label = |n: u32| format!("{}#{n}", path.display());
        assert_eq!((entries[0].label(), first.label), (label(2), label(2)));
        assert_eq!(entries[1].label(), label(1));
        // A file on its own is labelled by its path.
        let eml = dir.join("one.eml");
        std::fs::write(&eml, b"Subject: alone\n\nbody\n").unwrap();
        let one = scan(std::slice::from_ref(&eml), 1 << 20).unwrap();
        assert_eq!(one[0].label(), eml.display().to_string());
        // An empty file (an mbox of a folder with no mail) holds none.
        let empty = dir.join("empty.mbox");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(scan(&[empty, eml], 1 << 20).unwrap().len(), 1);
        // The first pass keeps a few dozen bytes a mail and nothing on the
        // heap for an mbox's mails (they share its path), whatever the input.
        assert!(std::mem::size_of::<Entry>() <= 80, "{}", std::mem::size_of::<Entry>());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
