//! The intent model's file (`data_dir/intent.model`) and the CSV examples
//! `train --csv` bootstraps from.
//!
//! The file: the magic `PDINTENT`, a format byte, a little-endian u32 length
//! and a JSON header (labels, counts, when and from what it was trained),
//! then the arrays: buckets (u32), idf (f32), scale and bias per label (f32),
//! weights (i16; the buckets' rows, then the pooled embeddings' rows). With
//! embeddings (format 2), then their vocabulary (u32 length, the pieces
//! joined by line breaks) and vectors (half floats). It is written to a
//! temporary file, synced and renamed, so a reader sees the old model or the
//! new one, never half of one. Format 1 (no embeddings) is still read.
//!
//! Also read here: the token embeddings an admin supplies, a safetensors
//! file of one matrix (a row per token: F16, BF16 or F32) and the
//! vocabulary, a text file of one piece per line (line n is token n).

use crate::core::embed::{Embeddings, f32_to_f16};
use crate::core::intent::Model;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"PDINTENT";
const FORMAT: u8 = 2;

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
    /// The token embeddings it was trained with and keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<EmbeddingsHeader>,
}

/// The embeddings a model file keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsHeader {
    /// Tokens of the vocabulary.
    pub tokens: usize,
    /// Dimensions of a token's vector.
    pub dims: usize,
    /// The file they were read from.
    pub source: String,
}

impl EmbeddingsHeader {
    /// What a header says of `e`, read from `source`.
    pub fn of(e: &Embeddings, source: &Path) -> Self {
        EmbeddingsHeader {
            tokens: e.vocab().len(),
            dims: e.dims(),
            source: source.display().to_string(),
        }
    }
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
    if let Some(e) = &model.embeddings {
        let vocab = e.vocab().join("\n");
        out.extend_from_slice(&(vocab.len() as u32).to_le_bytes());
        out.extend_from_slice(vocab.as_bytes());
        for v in e.table() {
            out.extend_from_slice(&v.to_le_bytes());
        }
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
    if !(1..=FORMAT).contains(&bytes[8]) {
        return Err(format!(
            "model format {} (this postdesk reads 1 to {FORMAT}): run `postdesk train` again",
            bytes[8]
        ));
    }
    let len = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")) as usize;
    let head = bytes.get(13..13 + len).ok_or("truncated header")?;
    let header: Header = serde_json::from_slice(head).map_err(|e| format!("bad header: {e}"))?;
    let (n, l) = (header.buckets, header.labels.len());
    let dense = header
        .embeddings
        .as_ref()
        .map_or(Some(0), |e| crate::core::intent::dense_rows(e.dims))
        .ok_or("impossible sizes")?;
    let mut rest = &bytes[13 + len..];
    let want = n
        .checked_mul(8)
        .and_then(|a| a.checked_add(l * 8))
        .and_then(|a| {
            n.checked_add(dense)
                .and_then(|r| r.checked_mul(l))
                .and_then(|w| w.checked_mul(2))
                .and_then(|w| a.checked_add(w))
        })
        .ok_or("impossible sizes")?;
    if rest.len() < want || (header.embeddings.is_none() && rest.len() != want) || l < 2 {
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
    let weights = take((n + dense) * l * 2)
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let embeddings = match &header.embeddings {
        None => None,
        Some(h) => {
            let size = rest.get(..4).ok_or("truncated vocabulary")?;
            let size = u32::from_le_bytes(size.try_into().expect("4")) as usize;
            let vocab = rest.get(4..4 + size).ok_or("truncated vocabulary")?;
            let vocab = std::str::from_utf8(vocab).map_err(|_| "vocabulary is not UTF-8")?;
            let vocab: Vec<String> = vocab.split('\n').map(str::to_string).collect();
            let table = &rest[4 + size..];
            if vocab.len() != h.tokens || Some(table.len()) != h.tokens.checked_mul(h.dims * 2) {
                return Err(format!(
                    "embeddings of {} bytes for {} pieces, expected {} × {}",
                    table.len(),
                    vocab.len(),
                    h.tokens,
                    h.dims
                ));
            }
            let table = table
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Some(Arc::new(Embeddings::new(vocab, h.dims, table)?))
        }
    };
    Ok((
        Model {
            labels: header.labels.clone(),
            buckets,
            idf,
            weights,
            scale,
            bias,
            examples: header.examples,
            embeddings,
        },
        header,
    ))
}

/// Reads token embeddings: `weights`, a safetensors file whose one matrix
/// has a row per token (F16, BF16 or F32), and `vocabulary`, one piece per
/// line. `Err` names the file and what is wrong.
pub fn load_embeddings(weights: &Path, vocabulary: &Path) -> Result<Embeddings, String> {
    let text = std::fs::read_to_string(vocabulary).map_err(|e| format!("{}: {e}", vocabulary.display()))?;
    let mut vocab: Vec<String> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if vocab.last().is_some_and(String::is_empty) {
        vocab.pop();
    }
    let bytes = std::fs::read(weights).map_err(|e| format!("{}: {e}", weights.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a safetensors file: {e}", weights.display()))?;
    let mut matrices: Vec<_> = file.iter().filter(|(_, t)| t.shape().len() == 2).collect();
    matrices.sort_by_key(|(name, _)| *name);
    let [(name, tensor)] = matrices.as_slice() else {
        return Err(format!(
            "{}: {} matrices ({}), expected one with a row per token",
            weights.display(),
            matrices.len(),
            matrices.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ));
    };
    let (rows, dims) = (tensor.shape()[0], tensor.shape()[1]);
    if rows != vocab.len() {
        return Err(format!(
            "{}: matrix {name} has {rows} rows, but {} has {} pieces: the two files do not belong together",
            weights.display(),
            vocabulary.display(),
            vocab.len()
        ));
    }
    let data = tensor.data();
    let table: Vec<u16> = match tensor.dtype() {
        safetensors::Dtype::F16 => data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
        safetensors::Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| f32_to_f16(f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)))
            .collect(),
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32_to_f16(f32::from_le_bytes(c.try_into().expect("4"))))
            .collect(),
        other => {
            return Err(format!(
                "{}: matrix {name} is {other:?}, expected F16, BF16 or F32",
                weights.display()
            ));
        }
    };
    Embeddings::new(vocab, dims, table).map_err(|e| format!("{}: {e}", weights.display()))
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
            embeddings: None,
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

    /// A safetensors file of `matrices` (name, rows, dims; F32 values i/10).
    fn safetensors_file(p: &Path, matrices: &[(&str, usize, usize)]) {
        let data: Vec<Vec<u8>> = matrices
            .iter()
            .map(|(_, r, d)| (0..r * d).flat_map(|i| (i as f32 / 10.0).to_le_bytes()).collect())
            .collect();
        let views = matrices.iter().zip(&data).map(|((name, r, d), bytes)| {
            (
                name.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*r, *d], bytes).unwrap(),
            )
        });
        std::fs::write(p, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    #[test]
    fn embeddings_are_read_checked_and_kept_in_the_model_file() {
        let dir = std::env::temp_dir().join(format!("postdesk-embeddings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (w, v) = (dir.join("e.safetensors"), dir.join("vocab.txt"));
        std::fs::write(&v, "<unk>\r\n▁card\n▁refund\n▁money\n").unwrap();
        safetensors_file(&w, &[("embed", 4, 3)]);
        let e = load_embeddings(&w, &v).unwrap();
        assert_eq!((e.vocab().len(), e.dims()), (4, 3));
        assert_eq!(e.vocab()[0], "<unk>", "a CRLF line is the piece without CR");
        // F32 became half floats: 0.5 (row 1, column 2) exactly.
        assert_eq!(crate::core::embed::f16_to_f32(e.table()[5]), 0.5);
        assert_eq!(e.tokens("card refund"), [1, 2]);

        // A model trained with them keeps them: same predictions from the file.
        let examples = [
            ("card late", "card"),
            ("card missing", "card"),
            ("refund me", "refund"),
            ("money back", "refund"),
        ];
        let model =
            crate::core::intent::train_with(&examples, TrainOptions::default(), Some(Arc::new(e.clone()))).unwrap();
        let header = Header {
            labels: model.labels.clone(),
            buckets: model.buckets.len(),
            examples: 4,
            source: "test".into(),
            trained_at: "2026-12-06T00:00:00Z".into(),
            embeddings: Some(EmbeddingsHeader::of(&e, &w)),
        };
        let p = path(&dir);
        save(&model, &header, &p).unwrap();
        let (back, h) = load(&p).unwrap();
        assert_eq!(back.embeddings.as_deref(), Some(&e));
        assert_eq!((&back, &h), (&model, &header));
        assert_eq!(back.rank("my card"), model.rank("my card"));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 2);
        assert!(parse(&bytes).unwrap_err().contains("expected 4 × 3"), "a cut table");

        // The files must belong together, and hold one matrix.
        std::fs::write(&v, "<unk>\n▁card\n").unwrap();
        let err = load_embeddings(&w, &v).unwrap_err();
        assert!(
            err.contains("has 4 rows") && err.contains("2 pieces") && err.contains("do not belong together"),
            "{err}"
        );
        safetensors_file(&w, &[("a", 2, 3), ("b", 2, 3)]);
        let err = load_embeddings(&w, &v).unwrap_err();
        assert!(err.contains("2 matrices (a, b)"), "{err}");
        std::fs::write(&w, b"not safetensors at all").unwrap();
        let err = load_embeddings(&w, &v).unwrap_err();
        assert!(err.contains("e.safetensors: not a safetensors file"), "{err}");
        let err = load_embeddings(&dir.join("missing"), &v).unwrap_err();
        assert!(err.contains("missing"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_model_file_of_format_1_is_still_read() {
        let model = train(
            &[("card late", "card"), ("refund me", "refund")],
            TrainOptions::default(),
        )
        .unwrap();
        let header = Header {
            labels: model.labels.clone(),
            buckets: model.buckets.len(),
            examples: 2,
            source: "test".into(),
            trained_at: "2026-12-03T00:00:00Z".into(),
            embeddings: None,
        };
        let dir = std::env::temp_dir().join(format!("postdesk-intent-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        save(&model, &header, &path(&dir)).unwrap();
        let mut bytes = std::fs::read(path(&dir)).unwrap();
        // Format 1 is format 2 without embeddings, and its header had no such key.
        assert!(!String::from_utf8_lossy(&bytes).contains("embeddings"));
        bytes[8] = 1;
        assert_eq!(parse(&bytes).unwrap(), (model, header));
        bytes[8] = 3;
        assert!(parse(&bytes).unwrap_err().contains("model format 3"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
