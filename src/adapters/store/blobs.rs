//! Content-addressed blobs (raw mail): one file per blob under
//! `data_dir/blobs/`, named by the SHA-256 of its bytes (`ab/abcdef…`).
//!
//! A blob is written to a temporary name and renamed into place, so a reader
//! never sees half a blob; [`Blobs::put_all`] returns only once every blob it
//! wrote is durable (one `syncfs` for the whole batch on Linux, else one
//! `fsync` per file and folder), so a record naming a blob is committed only
//! after the blob. Writing the same bytes twice writes nothing.

use super::StoreError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The blob folder.
#[derive(Clone, Debug)]
pub struct Blobs {
    root: PathBuf,
}

/// SHA-256 of `bytes`, lowercase hex: a blob's key.
pub fn key_of(bytes: &[u8]) -> String {
    crate::adapters::inbound::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Blob {
        path: path.display().to_string(),
        error,
    }
}

impl Blobs {
    /// Opens (creating) the folder.
    pub fn open(root: &Path) -> Result<Blobs, StoreError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        Ok(Blobs {
            root: root.to_path_buf(),
        })
    }

    /// The file of a key; `None` for anything but 64 lowercase hex digits
    /// (a key never names a path outside the folder).
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        let valid = key.len() == 64 && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| self.root.join(&key[..2]).join(key))
    }

    /// Writes every blob not yet stored and makes them durable. Keys in order.
    pub fn put_all(&self, blobs: &[&[u8]]) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::with_capacity(blobs.len());
        let mut written: Vec<PathBuf> = Vec::new();
        for bytes in blobs {
            let key = key_of(bytes);
            let path = self.path(&key).expect("a SHA-256 key is valid");
            if !path.is_file() {
                let dir = path.parent().expect("blob files sit in a folder");
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
                let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(bytes).map_err(io(&tmp))?;
                drop(f);
                std::fs::rename(&tmp, &path).map_err(io(&path))?;
                written.push(path);
            }
            keys.push(key);
        }
        if !written.is_empty() {
            self.sync(&written)?;
        }
        Ok(keys)
    }

    #[cfg(target_os = "linux")]
    fn sync(&self, _written: &[PathBuf]) -> Result<(), StoreError> {
        let dir = std::fs::File::open(&self.root).map_err(io(&self.root))?;
        rustix::fs::syncfs(&dir).map_err(|e| io(&self.root)(e.into()))
    }

    #[cfg(not(target_os = "linux"))]
    fn sync(&self, written: &[PathBuf]) -> Result<(), StoreError> {
        let mut dirs: Vec<&Path> = Vec::new();
        for p in written {
            std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(io(p))?;
            if let Some(d) = p.parent()
                && !dirs.contains(&d)
            {
                dirs.push(d);
            }
        }
        for d in dirs.into_iter().chain([self.root.as_path()]) {
            std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(io(d))?;
        }
        Ok(())
    }

    /// A blob's bytes.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(path) = self.path(key) else {
            return Ok(None);
        };
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Every stored key with its file's age in seconds, folder by folder.
    pub fn each(&self, mut f: impl FnMut(&str, u64) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now();
        for dir in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let dir = dir.map_err(io(&self.root))?.path();
            if !dir.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let e = e.map_err(io(&dir))?;
                let name = e.file_name().to_string_lossy().into_owned();
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .map_or(0, |d| d.as_secs());
                if name.starts_with('.') && name.ends_with(".tmp") {
                    // Left by a crash between write and rename.
                    if age > 3600 {
                        let _ = std::fs::remove_file(e.path());
                    }
                    continue;
                }
                if self.path(&name).is_some() {
                    f(&name, age)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes a blob.
    pub fn remove(&self, key: &str) -> Result<(), StoreError> {
        if let Some(p) = self.path(key) {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_reject_paths() {
        let dir = std::env::temp_dir().join(format!("postdesk-blobs-{}", std::process::id()));
        let blobs = Blobs::open(&dir).unwrap();
        let keys = blobs.put_all(&[b"one", b"two", b"one"]).unwrap();
        assert_eq!(keys[0], keys[2]);
        assert_eq!(keys[0], key_of(b"one"));
        assert_eq!(blobs.get(&keys[1]).unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(blobs.get("../../etc/passwd").unwrap(), None);
        assert!(blobs.path(&"A".repeat(64)).is_none());
        let mut n = 0;
        blobs
            .each(|_, _| {
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 2);
        blobs.remove(&keys[0]).unwrap();
        assert_eq!(blobs.get(&keys[0]).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
