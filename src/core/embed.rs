//! Pre-trained static token embeddings for the intent model: a SentencePiece
//! vocabulary, its byte-pair tokenizer, and one vector per token.
//!
//! The admin supplies both (`[intent] embeddings` and `vocabulary`); the
//! adapter reads the files, this module only computes. A text becomes its
//! tokens (spaces as `▁`, a `▁` before the first word, the adjacent pair
//! whose joined piece has the lowest id merged first, as SentencePiece's BPE
//! does with pieces in score order, a word that is a piece itself taken
//! whole; a character the vocabulary lacks falls back to its UTF-8 bytes
//! `<0xNN>`), then three pooled vectors: the mean of
//! its tokens' vectors, their maximum per dimension, and the maximum over
//! adjacent pairs of their sums (a little of the word order), each
//! L2-normalised. Vectors are kept as IEEE half floats to halve memory.

use std::collections::HashMap;

/// Most characters of a text tokenized (the pooled vectors of a long mail
/// are made from its start, as its features are).
const MAX_CHARS: usize = 10_000;

/// Most characters merged as one segment: a longer "word" (a hostile mail's
/// 4,000 letters without a space, a pasted key) is merged in pieces of this
/// many, as merging costs the square of a segment's length (a 4,000-letter
/// word took 558 ms whole; LLaMA's longest piece is 16 characters).
const MAX_SEGMENT: usize = 64;

/// The pooled vectors of a text: mean, maximum, maximum of adjacent pairs
/// (so `pooled` returns this many times the token vectors' dimensions).
pub const POOLS: usize = 3;

/// A vocabulary and its token vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// The pieces, by id.
    vocab: Vec<String>,
    /// Piece to id, for the pieces a merge or a character may produce.
    ids: HashMap<String, u32>,
    /// The byte-fallback tokens `<0x00>`…`<0xFF>`, where the vocabulary has them.
    bytes: Vec<Option<u32>>,
    /// Dimensions of one vector.
    dims: usize,
    /// `vocab.len() × dims` half floats, row by row.
    table: Vec<u16>,
}

impl Embeddings {
    /// A vocabulary (one piece per id) and its vectors (`vocab.len() × dims`
    /// half floats); `Err` says what does not fit.
    pub fn new(vocab: Vec<String>, dims: usize, table: Vec<u16>) -> Result<Self, String> {
        if vocab.is_empty() || dims == 0 {
            return Err("an empty vocabulary or vectors of no dimension".into());
        }
        if table.len() != vocab.len() * dims {
            return Err(format!(
                "{} vectors of {dims} for {} pieces of vocabulary: the two files do not belong together",
                table.len() / dims,
                vocab.len()
            ));
        }
        let mut ids = HashMap::with_capacity(vocab.len());
        let mut bytes = vec![None; 256];
        for (i, piece) in vocab.iter().enumerate() {
            if let Some(b) = byte_piece(piece) {
                bytes[b as usize] = Some(i as u32);
            } else if !matches!(piece.as_str(), "" | "<unk>" | "<s>" | "</s>" | "<pad>") {
                // The last of equal pieces wins (LLaMA's vocabulary has a
                // few twins; its tokenizers map them so).
                ids.insert(piece.clone(), i as u32);
            }
        }
        Ok(Embeddings {
            vocab,
            ids,
            bytes,
            dims,
            table,
        })
    }

    /// The pieces, by id.
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }

    /// Dimensions of one token vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The vectors as stored: half floats, row by row.
    pub fn table(&self) -> &[u16] {
        &self.table
    }

    /// The token ids of a text (its first 10,000 characters).
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        // Segments: a space and the word after it, merged apart (a piece
        // never holds a space after other characters). A run of spaces is
        // one, as mail's line wrapping and double spaces mean nothing.
        let mut segment: Vec<String> = Vec::new();
        for c in std::iter::once(' ').chain(text.chars().take(MAX_CHARS)) {
            let c = if c.is_whitespace() && c != '\n' { '▁' } else { c };
            if c == '▁' {
                if segment.last().is_some_and(|s| s == "▁") {
                    continue;
                }
                self.merge(&mut segment, &mut out);
            } else if segment.len() >= MAX_SEGMENT {
                self.merge(&mut segment, &mut out);
            }
            segment.push(c.to_string());
        }
        self.merge(&mut segment, &mut out);
        out
    }

    /// Byte-pair merges over one segment's symbols, lowest id first; the
    /// result's ids go to `out` and the segment is emptied.
    fn merge(&self, symbols: &mut Vec<String>, out: &mut Vec<u32>) {
        // A segment that is a piece itself is that piece (what the merges
        // reach for nearly every word, at a lookup's cost; and a vocabulary
        // of whole words works too).
        if symbols.len() > 1
            && let Some(id) = self.ids.get(&symbols.concat())
        {
            out.push(*id);
            symbols.clear();
            return;
        }
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.ids.get(&format!("{}{}", w[0], w[1])).map(|id| (*id, i)))
                .min();
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        for s in symbols.drain(..) {
            match self.ids.get(&s) {
                Some(id) => out.push(*id),
                None => {
                    let mut buf = [0u8; 4];
                    for ch in s.chars() {
                        out.extend(ch.encode_utf8(&mut buf).bytes().filter_map(|b| self.bytes[b as usize]));
                    }
                }
            }
        }
    }

    fn row(&self, id: u32) -> impl Iterator<Item = f32> + '_ {
        let at = id as usize * self.dims;
        self.table[at..at + self.dims].iter().map(|b| f16_to_f32(*b))
    }

    /// The mean, the maximum and the maximum of adjacent pairs' sums of the
    /// tokens' vectors, each L2-normalised, scaled together to length 1
    /// (all zero for no tokens).
    pub fn pooled(&self, ids: &[u32]) -> Vec<f32> {
        let d = self.dims;
        let mut out = vec![0f32; POOLS * d];
        let ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|i| (*i as usize) < self.vocab.len())
            .collect();
        if ids.is_empty() {
            return out;
        }
        let (mean, rest) = out.split_at_mut(d);
        let (max, pair) = rest.split_at_mut(d);
        max.fill(f32::MIN);
        pair.fill(f32::MIN);
        let mut previous: Vec<f32> = Vec::new();
        for &id in &ids {
            let row: Vec<f32> = self.row(id).collect();
            for j in 0..d {
                mean[j] += row[j];
                max[j] = max[j].max(row[j]);
                if let Some(p) = previous.get(j) {
                    pair[j] = pair[j].max(p + row[j]);
                }
            }
            previous = row;
        }
        if ids.len() < 2 {
            pair.fill(0.0);
        }
        let scale = 1.0 / (POOLS as f32).sqrt();
        for part in out.chunks_mut(d) {
            let norm = part.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-9);
            part.iter_mut().for_each(|v| *v *= scale / norm);
        }
        out
    }
}

/// `<0xNN>` → NN.
fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok()).flatten()
}

/// An IEEE 754 half float's bits to `f32`.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let frac = u32::from(bits & 0x3ff);
    let out = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value f × 2⁻²⁴.
            let v = f as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(out)
}

/// `f32` to the nearest IEEE 754 half float's bits (ties to even; too large
/// becomes infinity, too small zero or subnormal).
pub fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    if v.is_nan() {
        return sign | 0x7e00;
    }
    let a = v.abs();
    if a >= 65_520.0 {
        return sign | 0x7c00;
    }
    if a < 6.103_515_6e-5 {
        // Subnormal or zero: units of 2⁻²⁴, rounded half to even.
        return sign | (a * 16_777_216.0).round_ties_even() as u16;
    }
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mant = bits & 0x7f_ffff;
    let mut half = ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) {
        half += 1; // may carry into the exponent, which is right
    }
    sign | half as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(pieces: &[&str]) -> Embeddings {
        let dims = 2;
        let table = (0..pieces.len() * dims).map(|i| f32_to_f16(i as f32)).collect();
        Embeddings::new(pieces.iter().map(|p| p.to_string()).collect(), dims, table).unwrap()
    }

    #[test]
    fn pieces_merge_lowest_id_first_and_unknown_characters_fall_back_to_bytes() {
        let pieces = [
            "<unk>",
            "<s>",
            "</s>",
            "<0x0A>",
            "<0xC3>",
            "<0xA9>",
            "un",
            "und",
            "fund",
            "▁r",
            "▁re",
            "▁refund",
            "nd",
            "▁",
            "r",
            "e",
            "f",
            "u",
            "n",
            "d",
            "▁▁",
        ];
        let e = vocab(&pieces);
        let name = |ids: Vec<u32>| ids.into_iter().map(|i| pieces[i as usize]).collect::<Vec<_>>();
        // un, und, fund, ▁r, ▁re, ▁refund: each merge the lowest id there is.
        assert_eq!(name(e.tokens("refund")), ["▁refund"]);
        assert_eq!(name(e.tokens("fund")), ["▁", "fund"]);
        assert_eq!(name(e.tokens("rend")), ["▁re", "nd"]);
        // A run of spaces is one; é has no piece: its two bytes.
        assert_eq!(name(e.tokens("re \t fé")), ["▁re", "▁", "f", "<0xC3>", "<0xA9>"]);
        // A line break is a character the vocabulary lacks (bytes), not a space.
        assert_eq!(name(e.tokens("d\nd")), ["▁", "d", "<0x0A>", "d"]);
        assert!(e.tokens("").iter().all(|t| pieces[*t as usize] == "▁"));
        // A word longer than a segment is merged a segment at a time: a
        // segment is ▁ and 63 characters, so "und" ending a word of 63 is
        // whole, and ending a word of 64 is cut after its "n".
        let tail = |n: usize| {
            let t = name(e.tokens(&format!("{}und", "d".repeat(n))));
            t[t.len() - 2..].to_vec()
        };
        assert_eq!(tail(60), ["d", "und"]);
        assert_eq!(tail(61), ["un", "d"]);
    }

    #[test]
    fn pooled_vectors_are_normalised_and_empty_text_is_zero() {
        let e = vocab(&["<unk>", "▁a", "▁b"]);
        let p = e.pooled(&[1, 2]);
        assert_eq!(p.len(), 6);
        let len: f32 = p.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((len - 1.0).abs() < 1e-4, "{len}");
        assert!(e.pooled(&[]).iter().all(|v| *v == 0.0));
        // Ids out of range are ignored, not a panic.
        assert_eq!(e.pooled(&[99]), e.pooled(&[]));
        assert!(Embeddings::new(vec!["a".into()], 2, vec![0; 3]).is_err());
    }

    #[test]
    fn half_floats_round_trip() {
        for v in [0.0f32, 1.0, -2.5, 0.333_251_95, 65_504.0, 6.0e-8, -1.0e-5, 1.0e6] {
            let back = f16_to_f32(f32_to_f16(v));
            let want = if v.abs() > 65_504.0 {
                f32::INFINITY.copysign(v)
            } else {
                v
            };
            assert!(
                back == want || (back - want).abs() <= want.abs() * 1e-3 + 6.0e-8,
                "{v} became {back}"
            );
        }
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }
}
