//! The intent model's file (`data_dir/intent.model`) and the CSV examples
//! `train --csv` bootstraps from.
//!
//! The file: the magic `PDINTENT`, a format byte, a little-endian u32 length
//! and a JSON header (labels, counts, when and from what it was trained),
//! then the arrays: buckets (u32), idf (f32), scale and bias per label (f32),
//! weights (i16). It is written to a temporary file, synced and renamed, so
//! a reader sees the old model or the new one, never half of one.

use crate::core::intent::Model;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PDINTENT";
const FORMAT: u8 = 1;

/// The model file's name in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("intent.model")
}

/// What the model file says of itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The labels, sorted.
    pub labels: Vec<String>,
    /// Feature buckets kept.
    pub buckets: usize,
    /// Examples it learned from.
    pub examples: usize,
    /// Where the examples came from (`tickets:type`, `csv:FILE`).
    pub source: String,
    /// When it was trained (RFC 3339).
    pub trained_at: String,
}

/// Writes the model atomically.
pub fn save(model: &Model, header: &Header, path: &Path) -> std::io::Result<()> {
    let head = serde_json::to_vec(header).expect("serialises");
    let mut out = Vec::with_capacity(64 + head.len() + model.buckets.len() * 8 + model.weights.len() * 2);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    for b in &model.buckets {
        out.extend_from_slice(&b.to_le_bytes());
    }
    for v in model.idf.iter().chain(&model.scale).chain(&model.bias) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for w in &model.weights {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let tmp = path.with_extension("model.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}

/// Reads a model file; `Err` names what is wrong with it.
pub fn load(path: &Path) -> Result<(Model, Header), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(bytes: &[u8]) -> Result<(Model, Header), String> {
    if bytes.len() < 13 || &bytes[..8] != MAGIC {
        return Err("not a postdesk intent model".into());
    }
    if bytes[8] != FORMAT {
        return Err(format!(
            "model format {} (this postdesk reads {FORMAT}): run `postdesk train` again",
            bytes[8]
        ));
    }
    let len = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
    let head = bytes.get(13..13 + len).ok_or("truncated header")?;
    let header: Header = serde_json::from_slice(head).map_err(|e| format!("bad header: {e}"))?;
    let (n, l) = (header.buckets, header.labels.len());
    let mut rest = &bytes[13 + len..];
    let want = n
        .checked_mul(8)
        .and_then(|a| a.checked_add(l * 8))
        .and_then(|a| {
            n.checked_mul(l)
                .and_then(|w| w.checked_mul(2))
                .and_then(|w| a.checked_add(w))
        })
        .ok_or("impossible sizes")?;
    if rest.len() != want || l < 2 {
        return Err(format!("{} bytes of arrays, expected {want}", rest.len()));
    }
    let mut take = |k: usize| {
        let (a, b) = rest.split_at(k);
        rest = b;
        a
    };
    let u32s = |b: &[u8]| -> Vec<u32> {
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
            .collect()
    };
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect()
    };
    let buckets = u32s(take(n * 4));
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err("buckets out of order".into());
    }
    let idf = f32s(take(n * 4));
    let scale = f32s(take(l * 4));
    let bias = f32s(take(l * 4));
    let weights = take(n * l * 2)
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok((
        Model {
            labels: header.labels.clone(),
            buckets,
            idf,
            weights,
            scale,
            bias,
            examples: header.examples,
        },
        header,
    ))
}

/// `(text, label)` rows of a CSV file whose header names the two columns
/// (`text,label` by default; `--csv FILE:TEXT,LABEL` picks others). Rows
/// with an empty text or label are skipped; a malformed row is an error
/// with its line.
pub fn read_csv(path: &Path, text_col: &str, label_col: &str) -> Result<Vec<(String, String)>, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .clone();
    let col = |name: &str| {
        headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
            format!(
                "{}: no column {name:?} (columns: {})",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let (t, l) = (col(text_col)?, col(label_col)?);
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| format!("{}: {e}", path.display()))?;
        let (text, label) = (row.get(t).unwrap_or("").trim(), row.get(l).unwrap_or("").trim());
        if !text.is_empty() && !label.is_empty() {
            out.push((text.to_string(), label.to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::intent::{TrainOptions, train};

    #[test]
    fn a_model_survives_the_file_and_a_damaged_file_is_refused() {
        let model = train(
            &[
                ("card late", "card"),
                ("card missing", "card"),
                ("refund me", "refund"),
                ("money back", "refund"),
            ],
            TrainOptions::default(),
        )
        .unwrap();
        let header = Header {
            labels: model.labels.clone(),
            buckets: model.buckets.len(),
            examples: 4,
            source: "test".into(),
            trained_at: "2026-12-03T00:00:00Z".into(),
        };
        let dir = std::env::temp_dir().join(format!("postdesk-intent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = path(&dir);
        save(&model, &header, &p).unwrap();
        let (back, h) = load(&p).unwrap();
        assert_eq!((back, h), (model, header));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(parse(&bytes).unwrap_err().contains("expected"));
        assert!(
            parse(b"hello world, not a model")
                .unwrap_err()
                .contains("not a postdesk")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
