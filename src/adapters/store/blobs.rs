//! Content-addressed blobs (raw mail), packed: appended to segment files
//! `data_dir/blobs/pack-NNNNNNNN` and found through an index
//! (SHA-256 → pack, offset, length, time stored) kept in the sled tree the
//! store hands over.
//!
//! One file per blob cost an inode and a 4 KB block each (ext4 spent most of a
//! large backfill allocating inodes, and a 1.5 KB mail took 4 KB); a pack
//! takes many blobs per write and per sync. Each record in a pack is a magic,
//! the 32-byte hash and the body's length (big-endian `u64`), then the body:
//! `PDB2` when the body is the blob compressed as an LZ4 block (its size
//! prepended), which is kept when it saves at least an eighth (mail text
//! shrinks 1.8×: the corpora's mail and the benches' alike), `PDB1` when the
//! body is the blob as it is. A read checks the header against the key it
//! asked for.
//!
//! [`Blobs::put_all`] appends what is not yet stored, syncs the pack, then
//! writes and flushes the index entries, so a record naming a blob is committed
//! only after the blob and its index entry are durable. A crash mid-append
//! leaves bytes no index entry names; they are dead space, reclaimed with the
//! pack. Writing the same bytes twice writes nothing (the index entry's time
//! is renewed, so a sweep racing the second write keeps it).
//!
//! [`Blobs::sweep`] drops the index entries no record names (past a grace
//! period) and rewrites each full pack that is less than half alive: its live
//! blobs go to the pack being written, the index is pointed at them, then the
//! old pack is deleted. Blob files of the previous layout (`ab/abcdef…`) are
//! taken into packs when the folder is opened, keeping their age.

use super::StoreError;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A pack stops taking blobs past this size.
const PACK_MAX: u64 = 64 << 20;
/// Each record's header: magic, hash, length.
const HEADER: usize = 4 + 32 + 8;
/// A record whose body is the blob as it is.
const MAGIC: &[u8; 4] = b"PDB1";
/// A record whose body is the blob as an LZ4 block, its size prepended.
const MAGIC_LZ4: &[u8; 4] = b"PDB2";
/// Blobs from this size on are compressed only if a sample of this size from their middle compresses.
const PROBE_FROM: usize = 16 << 10;
const PROBE: usize = 4 << 10;
/// Blobs smaller than this are kept as they are.
const COMPRESS_FROM: usize = 128;

/// The blob store.
#[derive(Clone)]
pub struct Blobs {
    root: PathBuf,
    index: sled::Tree,
    writer: Arc<Mutex<Writer>>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blobs({})", self.root.display())
    }
}

/// The pack being appended to.
struct Writer {
    pack: u32,
    file: Option<std::fs::File>,
    len: u64,
}

/// Where a blob is: an index entry's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    pack: u32,
    /// The record's start (its header).
    offset: u64,
    /// The body's length (without the header).
    len: u64,
    /// Unix seconds it was stored, or last stored again.
    stored: u64,
}

impl Loc {
    fn encode(&self) -> [u8; 28] {
        let mut v = [0u8; 28];
        v[..4].copy_from_slice(&self.pack.to_be_bytes());
        v[4..12].copy_from_slice(&self.offset.to_be_bytes());
        v[12..20].copy_from_slice(&self.len.to_be_bytes());
        v[20..].copy_from_slice(&self.stored.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Loc, StoreError> {
        if v.len() != 28 {
            return Err(StoreError::Corrupt {
                tree: "blobs",
                message: format!("an index entry of {} bytes", v.len()),
            });
        }
        let u64_at = |at: usize| u64::from_be_bytes(v[at..at + 8].try_into().expect("eight bytes"));
        Ok(Loc {
            pack: u32::from_be_bytes(v[..4].try_into().expect("four bytes")),
            offset: u64_at(4),
            len: u64_at(12),
            stored: u64_at(20),
        })
    }

    /// The record's whole size in its pack.
    fn size(&self) -> u64 {
        HEADER as u64 + self.len
    }
}

/// A record's magic and its body.
type Body<'a> = (&'static [u8; 4], Cow<'a, [u8]>);

/// A record's magic and body for a blob: compressed when that saves at least an eighth.
fn body(bytes: &[u8]) -> Body<'_> {
    // A large blob is tried on a sample from its middle first: a mail that
    // is mostly a base64 attachment saves 4% for the time of a whole pass.
    let saves = |packed: usize, raw: usize| packed <= raw - raw / 8;
    if bytes.len() >= PROBE_FROM {
        let sample = &bytes[bytes.len() / 2 - PROBE / 2..][..PROBE];
        if !saves(lz4_flex::block::compress(sample).len(), PROBE) {
            return (MAGIC, Cow::Borrowed(bytes));
        }
    }
    if bytes.len() >= COMPRESS_FROM {
        let packed = lz4_flex::block::compress_prepend_size(bytes);
        if saves(packed.len(), bytes.len()) {
            return (MAGIC_LZ4, Cow::Owned(packed));
        }
    }
    (MAGIC, Cow::Borrowed(bytes))
}

/// An LZ4 block with its size prepended, decompressed against `dict` (empty
/// for none): the packs' and the sled records' one way back. A size past
/// LZ4's 255-fold bound is damage, refused before anything is allocated.
pub(super) fn unpack(packed: &[u8], dict: &[u8]) -> Result<Vec<u8>, String> {
    let size = packed.get(..4).map_or(u64::MAX, |s| {
        u64::from(u32::from_le_bytes(s.try_into().expect("four bytes")))
    });
    if size > packed.len() as u64 * 255 {
        return Err(format!("{} compressed bytes claim {size}", packed.len()));
    }
    lz4_flex::block::decompress_size_prepended_with_dict(packed, dict).map_err(|e| e.to_string())
}

/// SHA-256 of `bytes`, lowercase hex: a blob's key.
pub fn key_of(bytes: &[u8]) -> String {
    crate::adapters::inbound::hex(&digest(bytes))
}

/// SHA-256 of `bytes`: the 32 bytes a key names.
fn digest(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Whether `key` has a blob key's shape: 64 lowercase hex digits.
pub fn is_key(key: &str) -> bool {
    raw_key(key).is_some()
}

/// The 32 bytes a key names; `None` for anything but 64 lowercase hex digits.
fn raw_key(key: &str) -> Option<[u8; 32]> {
    let b = key.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Blob {
        path: path.display().to_string(),
        error,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Blobs {
    /// Opens (creating) the folder with its index tree, and takes in blob
    /// files of the previous layout.
    pub fn open(root: &Path, index: sled::Tree) -> Result<Blobs, StoreError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let last = Self::packs_in(root)?.into_iter().next_back();
        let writer = match last {
            Some(pack) => {
                let len = std::fs::metadata(Self::pack_path_in(root, pack))
                    .map_err(io(root))?
                    .len();
                Writer { pack, file: None, len }
            }
            None => Writer {
                pack: 1,
                file: None,
                len: 0,
            },
        };
        let blobs = Blobs {
            root: root.to_path_buf(),
            index,
            writer: Arc::new(Mutex::new(writer)),
        };
        blobs.adopt_files()?;
        Ok(blobs)
    }

    fn pack_path_in(root: &Path, pack: u32) -> PathBuf {
        root.join(format!("pack-{pack:08}"))
    }

    fn pack_path(&self, pack: u32) -> PathBuf {
        Self::pack_path_in(&self.root, pack)
    }

    /// The packs in the folder, in order.
    fn packs_in(root: &Path) -> Result<Vec<u32>, StoreError> {
        let mut packs = Vec::new();
        for e in std::fs::read_dir(root).map_err(io(root))? {
            let name = e.map_err(io(root))?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("pack-"))
                .and_then(|n| n.parse().ok())
            {
                packs.push(n);
            }
        }
        packs.sort_unstable();
        Ok(packs)
    }

    /// Writes every blob not yet stored and makes them durable, with their
    /// index entries. Keys in order.
    pub fn put_all(&self, blobs: &[&[u8]]) -> Result<Vec<String>, StoreError> {
        let stored = now_secs();
        let items: Vec<([u8; 32], &[u8], u64)> = blobs.iter().map(|b| (digest(b), *b, stored)).collect();
        self.put_raw(&items, false)?;
        Ok(items.iter().map(|(k, ..)| crate::adapters::inbound::hex(k)).collect())
    }

    /// Appends blobs under their keys (the caller hashed them) with the time
    /// each counts as stored. A key already indexed is only touched (its time
    /// renewed), unless `moving`: then its blob is appended again and the
    /// index pointed at the copy (a key no longer indexed is left out).
    pub(super) fn put_raw(&self, items: &[([u8; 32], &[u8], u64)], moving: bool) -> Result<(), StoreError> {
        // Compressed before the writer is taken, for the blobs not stored yet
        // (one stored meanwhile is only touched; one swept meanwhile is compressed below).
        let mut bodies: Vec<Option<Body<'_>>> = Vec::with_capacity(items.len());
        for (key, bytes, _) in items {
            bodies.push((moving || !self.index.contains_key(key)?).then(|| body(bytes)));
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = sled::Batch::default();
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        let mut touched: Vec<u32> = Vec::new();
        let mut new_pack = false;
        for ((key, bytes, stored), pre) in items.iter().zip(&mut bodies) {
            if !seen.insert(*key) {
                continue;
            }
            let mut stored = *stored;
            match (self.index.get(key)?, moving) {
                (Some(old), false) => {
                    let mut loc = Loc::decode(&old)?;
                    loc.stored = loc.stored.max(stored);
                    batch.insert(&key[..], &loc.encode()[..]);
                    continue;
                }
                (Some(old), true) => stored = stored.max(Loc::decode(&old)?.stored),
                (None, true) => continue,
                (None, false) => {}
            }
            if w.len >= PACK_MAX {
                w.file = None;
                w.pack += 1;
                w.len = 0;
            }
            let path = self.pack_path(w.pack);
            if w.file.is_none() {
                new_pack |= !path.exists();
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io(&path))?;
                w.len = f.metadata().map_err(io(&path))?.len();
                w.file = Some(f);
            }
            let file = w.file.as_mut().expect("opened above");
            let (magic, body) = pre.take().unwrap_or_else(|| body(bytes));
            let mut head = [0u8; HEADER];
            head[..4].copy_from_slice(magic);
            head[4..36].copy_from_slice(key);
            head[36..].copy_from_slice(&(body.len() as u64).to_be_bytes());
            if let Err(e) = file.write_all(&head).and_then(|()| file.write_all(&body)) {
                // A write cut short (a full disk) leaves part of a record at
                // the pack's end: the pack is opened again for the next one,
                // which goes after it, at the length the file has then.
                w.file = None;
                return Err(io(&path)(e));
            }
            let loc = Loc {
                pack: w.pack,
                offset: w.len,
                len: body.len() as u64,
                stored,
            };
            w.len += loc.size();
            if !touched.contains(&w.pack) {
                touched.push(w.pack);
            }
            batch.insert(&key[..], &loc.encode()[..]);
        }
        if seen.is_empty() {
            return Ok(());
        }
        for pack in touched {
            let path = self.pack_path(pack);
            let synced = match &w.file {
                Some(f) if pack == w.pack => f.sync_data(),
                _ => std::fs::File::open(&path).and_then(|f| f.sync_data()),
            };
            synced.map_err(io(&path))?;
        }
        if new_pack {
            // A new pack's name is durable with its folder.
            std::fs::File::open(&self.root)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.root))?;
        }
        self.index.apply_batch(batch)?;
        self.index.flush()?;
        Ok(())
    }

    /// A blob's bytes.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(raw) = raw_key(key) else {
            return Ok(None);
        };
        // A sweep may move the blob between the look-up and the read: look again once.
        for attempt in 0..2 {
            let Some(v) = self.index.get(raw)? else {
                return Ok(None);
            };
            let loc = Loc::decode(&v)?;
            let path = self.pack_path(loc.pack);
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt == 0 => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            return self.read_at(&file, &path, &raw, &loc).map(Some);
        }
        Ok(None)
    }

    fn read_at(&self, file: &std::fs::File, path: &Path, key: &[u8; 32], loc: &Loc) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; loc.size() as usize];
        file.read_exact_at(&mut buf, loc.offset).map_err(io(path))?;
        let corrupt = |why: &str| StoreError::Corrupt {
            tree: "blobs",
            message: format!(
                "{} at offset {} does not hold blob {}{why}",
                path.display(),
                loc.offset,
                crate::adapters::inbound::hex(key)
            ),
        };
        if &buf[4..36] != key || buf[36..HEADER] != loc.len.to_be_bytes() {
            return Err(corrupt(""));
        }
        match &buf[..4] {
            m if m == MAGIC => {
                buf.drain(..HEADER);
                Ok(buf)
            }
            m if m == MAGIC_LZ4 => unpack(&buf[HEADER..], b"").map_err(|e| corrupt(&format!(": {e}"))),
            _ => Err(corrupt("")),
        }
    }

    /// Every stored key, in key order.
    pub fn each(&self, mut f: impl FnMut(&str) -> Result<(), StoreError>) -> Result<(), StoreError> {
        for r in self.index.iter() {
            let (k, _) = r?;
            f(&crate::adapters::inbound::hex(&k))?;
        }
        Ok(())
    }

    /// Drops the blobs `referenced` does not know that were stored at least
    /// `grace_secs` ago, then rewrites the full packs less than half alive.
    /// Returns how many blobs went.
    pub fn sweep(
        &self,
        grace_secs: u64,
        referenced: impl Fn(&str) -> Result<bool, StoreError>,
    ) -> Result<u64, StoreError> {
        let active = self.writer.lock().unwrap_or_else(|e| e.into_inner()).pack;
        let now = now_secs();
        let mut gone = 0;
        // Live bytes per pack, after the drops (not the keys: a large desk has
        // hundreds of thousands, and few packs are rewritten).
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        for r in self.index.iter() {
            let (k, v) = r?;
            let loc = Loc::decode(&v)?;
            let key = Self::index_key(&k)?;
            if now.saturating_sub(loc.stored) >= grace_secs && !referenced(&crate::adapters::inbound::hex(&key))? {
                // Unless stored again meanwhile (then the value differs).
                if self.index.compare_and_swap(k, Some(v), None::<&[u8]>)?.is_ok() {
                    gone += 1;
                    continue;
                }
            }
            *live.entry(loc.pack).or_default() += loc.size();
        }
        if gone > 0 {
            self.index.flush()?;
        }
        let mut thin = Vec::new();
        for pack in Self::packs_in(&self.root)? {
            if pack >= active {
                continue;
            }
            let path = self.pack_path(pack);
            let size = std::fs::metadata(&path).map_err(io(&path))?.len();
            let alive = live.get(&pack).copied().unwrap_or_default();
            if alive * 2 < size {
                thin.push((pack, path, size, alive));
            }
        }
        if thin.is_empty() {
            return Ok(gone);
        }
        // The keys of the packs to rewrite, from a second pass.
        let mut keys: BTreeMap<u32, Vec<[u8; 32]>> = thin.iter().map(|(p, ..)| (*p, Vec::new())).collect();
        for r in self.index.iter() {
            let (k, v) = r?;
            if let Some(list) = keys.get_mut(&Loc::decode(&v)?.pack) {
                list.push(Self::index_key(&k)?);
            }
        }
        for (pack, path, size, alive) in thin {
            self.rewrite(pack, keys.get(&pack).map_or(&[][..], Vec::as_slice))?;
            std::fs::remove_file(&path).map_err(io(&path))?;
            tracing::info!(pack, bytes = size, kept = alive, "blob pack rewritten");
        }
        Ok(gone)
    }

    /// A key of the index as the 32 bytes it must be.
    fn index_key(k: &[u8]) -> Result<[u8; 32], StoreError> {
        k.try_into().map_err(|_| StoreError::Corrupt {
            tree: "blobs",
            message: format!("an index key of {} bytes", k.len()),
        })
    }

    /// Copies a pack's live blobs to the pack being written, keeping their times.
    fn rewrite(&self, pack: u32, keys: &[[u8; 32]]) -> Result<(), StoreError> {
        let path = self.pack_path(pack);
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        for chunk in keys.chunks(256) {
            let mut moved: Vec<([u8; 32], Vec<u8>, u64)> = Vec::new();
            for key in chunk {
                let Some(v) = self.index.get(key)? else { continue };
                let loc = Loc::decode(&v)?;
                if loc.pack == pack {
                    moved.push((*key, self.read_at(&file, &path, key, &loc)?, loc.stored));
                }
            }
            let items: Vec<([u8; 32], &[u8], u64)> = moved.iter().map(|(k, b, s)| (*k, b.as_slice(), *s)).collect();
            self.put_raw(&items, true)?;
        }
        Ok(())
    }

    /// Takes blob files of the previous layout (`ab/abcdef…`) into packs,
    /// keeping each file's age, then deletes them.
    fn adopt_files(&self) -> Result<(), StoreError> {
        let mut dirs = Vec::new();
        for e in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let e = e.map_err(io(&self.root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 2 && e.path().is_dir() {
                dirs.push(e.path());
            }
        }
        if dirs.is_empty() {
            return Ok(());
        }
        tracing::info!(folders = dirs.len(), "taking blob files into packs");
        let now = std::time::SystemTime::now();
        let mut files: Vec<(PathBuf, [u8; 32], u64)> = Vec::new();
        for dir in &dirs {
            for e in std::fs::read_dir(dir).map_err(io(dir))? {
                let e = e.map_err(io(dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .map_or(0, |d| d.as_secs());
                match raw_key(&name) {
                    Some(key) => files.push((e.path(), key, now_secs().saturating_sub(age))),
                    // Left by a crash between write and rename, or not ours.
                    None if name.starts_with('.') && name.ends_with(".tmp") => {
                        let _ = std::fs::remove_file(e.path());
                    }
                    None => {}
                }
            }
        }
        for chunk in files.chunks(256) {
            let bytes: Vec<Vec<u8>> = chunk
                .iter()
                .map(|(p, ..)| std::fs::read(p).map_err(io(p)))
                .collect::<Result<_, _>>()?;
            let items: Vec<([u8; 32], &[u8], u64)> = chunk
                .iter()
                .zip(&bytes)
                .map(|((_, key, stored), b)| (*key, b.as_slice(), *stored))
                .collect();
            self.put_raw(&items, false)?;
            for (p, ..) in chunk {
                std::fs::remove_file(p).map_err(io(p))?;
            }
        }
        for dir in &dirs {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> (PathBuf, sled::Db) {
        let dir = std::env::temp_dir().join(format!("postdesk-blobs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::Config::new().path(dir.join("db")).temporary(true).open().unwrap();
        (dir, db)
    }

    /// Bytes that do not compress (xorshift).
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn put_get_and_reject_bad_keys() {
        let (dir, db) = temp("get");
        let blobs = Blobs::open(&dir.join("blobs"), db.open_tree("blobs").unwrap()).unwrap();
        let keys = blobs.put_all(&[b"one", b"two", b"one"]).unwrap();
        assert_eq!(keys[0], keys[2]);
        assert_eq!(keys[0], key_of(b"one"));
        assert_eq!(blobs.get(&keys[1]).unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(blobs.get(&keys[0]).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(blobs.get("../../etc/passwd").unwrap(), None);
        assert_eq!(blobs.get(&"A".repeat(64)).unwrap(), None);
        assert_eq!(blobs.get(&key_of(b"never")).unwrap(), None);
        // Both in one pack, each once.
        let pack = std::fs::read(dir.join("blobs/pack-00000001")).unwrap();
        assert_eq!(pack.len(), 2 * HEADER + 6);
        let mut n = 0;
        blobs
            .each(|_| {
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 2);
        // A damaged record is an error, not other bytes.
        let mut bad = pack.clone();
        bad[HEADER] ^= 1;
        bad[5] ^= 1;
        std::fs::write(dir.join("blobs/pack-00000001"), &bad).unwrap();
        assert!(matches!(blobs.get(&keys[0]), Err(StoreError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn text_is_stored_compressed_and_read_back_whole() {
        let (dir, db) = temp("lz4");
        let blobs = Blobs::open(&dir.join("blobs"), db.open_tree("blobs").unwrap()).unwrap();
        let mail = "Subject: refund\r\n\r\nPlease refund my order, it arrived damaged.\r\n".repeat(40);
        let noise = noise(4000);
        let keys = blobs.put_all(&[mail.as_bytes(), &noise]).unwrap();
        assert_eq!(blobs.get(&keys[0]).unwrap().as_deref(), Some(mail.as_bytes()));
        assert_eq!(blobs.get(&keys[1]).unwrap().as_deref(), Some(&noise[..]));
        let pack = std::fs::read(dir.join("blobs/pack-00000001")).unwrap();
        assert_eq!(&pack[..4], MAGIC_LZ4, "text is compressed");
        let first = u64::from_be_bytes(pack[36..HEADER].try_into().unwrap()) as usize;
        assert!(first * 4 < mail.len(), "{first} bytes for {}", mail.len());
        assert_eq!(
            &pack[HEADER + first..HEADER + first + 4],
            MAGIC,
            "noise is kept as it is"
        );
        assert_eq!(pack.len(), 2 * HEADER + first + noise.len());
        // A large mail that is mostly an attachment is not compressed: its middle does not compress.
        let mut attached = mail.as_bytes()[..2000].to_vec();
        attached.extend_from_slice(&self::noise(30_000));
        attached.extend_from_slice(&mail.as_bytes()[..2000]);
        let key = blobs.put_all(&[&attached]).unwrap().remove(0);
        assert_eq!(blobs.get(&key).unwrap().as_deref(), Some(&attached[..]));
        let pack = std::fs::read(dir.join("blobs/pack-00000001")).unwrap();
        assert_eq!(&pack[pack.len() - attached.len() - HEADER..][..4], MAGIC);
        // A damaged body or size is an error, never other bytes nor a huge allocation.
        for at in [HEADER + 2, HEADER + 3, HEADER + 20] {
            let mut bad = pack.clone();
            bad[at] ^= 0x5a;
            std::fs::write(dir.join("blobs/pack-00000001"), &bad).unwrap();
            match blobs.get(&keys[0]) {
                Err(StoreError::Corrupt { .. }) => {}
                Ok(Some(b)) => assert_ne!(b, mail.as_bytes(), "a damaged body read as the mail"),
                other => panic!("{other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reopened_store_appends_and_a_torn_tail_is_dead_space() {
        let (dir, db) = temp("reopen");
        let root = dir.join("blobs");
        let a = Blobs::open(&root, db.open_tree("blobs").unwrap()).unwrap();
        let k1 = a.put_all(&[b"first"]).unwrap().remove(0);
        drop(a);
        // A crash mid-append: half a header after the last record.
        let pack = root.join("pack-00000001");
        let mut f = std::fs::OpenOptions::new().append(true).open(&pack).unwrap();
        f.write_all(b"PDB1\x00\x01").unwrap();
        drop(f);
        let b = Blobs::open(&root, db.open_tree("blobs").unwrap()).unwrap();
        let k2 = b.put_all(&[b"second"]).unwrap().remove(0);
        assert_eq!(b.get(&k1).unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(b.get(&k2).unwrap().as_deref(), Some(&b"second"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sweep_drops_unnamed_blobs_and_rewrites_half_dead_packs() {
        let (dir, db) = temp("sweep");
        let root = dir.join("blobs");
        let blobs = Blobs::open(&root, db.open_tree("blobs").unwrap()).unwrap();
        let old = now_secs() - 7200;
        let keep = [7u8; 32];
        let drop_ = [8u8; 32];
        let young = [9u8; 32];
        let big = noise(1000);
        blobs
            .put_raw(
                &[
                    (keep, b"keep me", old),
                    (drop_, &big, old),
                    (young, b"young", now_secs()),
                ],
                false,
            )
            .unwrap();
        // Seal pack 1 as if it were full: the next blob starts pack 2.
        blobs.writer.lock().unwrap().len = PACK_MAX;
        let later = blobs.put_all(&[b"later"]).unwrap().remove(0);
        assert!(root.join("pack-00000002").exists());
        let keep_hex = crate::adapters::inbound::hex(&keep);
        let gone = blobs.sweep(3600, |k| Ok(k == keep_hex)).unwrap();
        assert_eq!(gone, 1, "only the old unnamed blob goes");
        assert_eq!(blobs.get(&crate::adapters::inbound::hex(&drop_)).unwrap(), None);
        // Pack 1 was less than half alive: rewritten into pack 2 and deleted.
        assert!(!root.join("pack-00000001").exists());
        assert_eq!(blobs.get(&keep_hex).unwrap().as_deref(), Some(&b"keep me"[..]));
        assert_eq!(
            blobs.get(&crate::adapters::inbound::hex(&young)).unwrap().as_deref(),
            Some(&b"young"[..])
        );
        assert_eq!(blobs.get(&later).unwrap().as_deref(), Some(&b"later"[..]));
        // The moved blob kept its age: a second sweep with nothing named drops it, not the young one.
        let gone = blobs.sweep(3600, |_| Ok(false)).unwrap();
        assert_eq!(gone, 1);
        assert_eq!(blobs.get(&keep_hex).unwrap(), None);
        assert!(blobs.get(&crate::adapters::inbound::hex(&young)).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn storing_again_renews_a_blob_against_the_sweep() {
        let (dir, db) = temp("renew");
        let blobs = Blobs::open(&dir.join("blobs"), db.open_tree("blobs").unwrap()).unwrap();
        let key = digest(b"again");
        blobs.put_raw(&[(key, b"again", now_secs() - 7200)], false).unwrap();
        blobs.put_all(&[b"again"]).unwrap();
        assert_eq!(blobs.sweep(3600, |_| Ok(false)).unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_of_the_previous_layout_are_taken_into_packs() {
        let (dir, db) = temp("adopt");
        let root = dir.join("blobs");
        let key = key_of(b"old mail");
        std::fs::create_dir_all(root.join(&key[..2])).unwrap();
        std::fs::write(root.join(&key[..2]).join(&key), b"old mail").unwrap();
        std::fs::write(root.join(&key[..2]).join(format!(".{key}.1.tmp")), b"half").unwrap();
        let blobs = Blobs::open(&root, db.open_tree("blobs").unwrap()).unwrap();
        assert_eq!(blobs.get(&key).unwrap().as_deref(), Some(&b"old mail"[..]));
        assert!(!root.join(&key[..2]).exists(), "the old folder is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
