//! Intent: what a customer wants, by a linear classifier learned from the
//! desk's own labelled tickets (or another helpdesk's export).
//!
//! Features are hashed word unigrams and bigrams and character 2–5-grams of
//! each word (with its boundaries), weighted by sublinear term frequency
//! times inverse document frequency and L2-normalised; the model is one
//! L2-regularised squared-hinge linear SVM per label, trained by dual
//! coordinate descent (the method of LIBLINEAR, which scikit-learn's
//! `LinearSVC` runs). Weights are kept as 16-bit integers with a scale per
//! label, only for the feature buckets seen in training. Everything here is
//! computation: reading and writing the model file is the adapter's.
//!
//! With pre-trained token embeddings (`[intent] embeddings`, see
//! [`crate::core::embed`]) two more blocks join each text's features: its
//! tokens and adjacent token pairs (hashed, tf-idf, unit length, times
//! `TOKEN_WEIGHT`) and its pooled token vectors (times `EMBED_WEIGHT`), which
//! carry what the desk's own examples cannot: that words never seen in
//! training mean what seen ones do; and 1,024 random Fourier features of the
//! pooled vectors (Rahimi and Recht, 2007: cosines of fixed random
//! projections, so that a linear model over them approximates a Gaussian
//! kernel's, letting it weigh combinations of meanings). The model then keeps
//! the embeddings, so it predicts from its file alone; the projections come
//! from a fixed seed and are made again when it is read.

use crate::core::embed::Embeddings;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Hash buckets for features (collisions are rare at a desk's vocabulary).
pub const BUCKETS: u32 = 1 << 20;

/// The token block's weight beside the n-grams' (unit length each); chosen
/// on the bench's folds (0.7 and 1.0 scored alike; C 1.5 or 60 epochs
/// instead of 1 and 30 changed nothing).
const TOKEN_WEIGHT: f32 = 0.7;

/// The pooled vectors' weight beside the n-grams' (on the bench's folds,
/// without random features: 1.2 91.79%, 1.4 91.86%, 1.7 91.84%, 2.2 91.72%).
const EMBED_WEIGHT: f32 = 1.4;

/// Random Fourier features of the pooled vectors (on the bench's folds:
/// none 91.86%; 1,024 at σ 1, 1.5, 2, 3: 91.99%, 91.99%, 92.10%, 91.93%).
const RANDOM_FEATURES: usize = 1024;

/// Their projections' standard deviation (the kernel's width).
const RANDOM_SIGMA: f32 = 2.0;

/// Their projections' seed: part of the model's format (a model file's
/// features are made again from it when it is read).
const RANDOM_SEED: u64 = 0x1234_5678_9abc_def1;

/// The rows after the buckets' for token vectors of `dims`: the pooled
/// vectors, then the random features.
pub fn dense_rows(dims: usize) -> Option<usize> {
    dims.checked_mul(crate::core::embed::POOLS)?
        .checked_add(RANDOM_FEATURES)
}

/// The random projections for pooled vectors of `d` dimensions, `d + 1`
/// numbers a feature (the weights, then the phase), made once per `d`.
fn projections(d: usize) -> Arc<[f32]> {
    static MADE: std::sync::Mutex<Vec<(usize, Arc<[f32]>)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, p)) = made.iter().find(|(k, _)| *k == d) {
        return p.clone();
    }
    let mut rng = Rng(RANDOM_SEED);
    let mut uniform = || (rng.next() >> 11) as f32 / (1u64 << 53) as f32;
    let p: Arc<[f32]> = (0..RANDOM_FEATURES * (d + 1))
        .map(|k| {
            if k % (d + 1) == d {
                uniform() * std::f32::consts::TAU
            } else {
                // Box–Muller: a standard normal from two uniforms.
                let (a, b) = (uniform().max(1e-12), uniform());
                (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos() * RANDOM_SIGMA
            }
        })
        .collect();
    made.push((d, p.clone()));
    p
}

/// `√(2/D) · cos(w · p + b)` for each of the D projections.
fn random_features(pooled: &[f32]) -> Vec<f32> {
    let d = pooled.len();
    let p = projections(d);
    let scale = (2.0 / RANDOM_FEATURES as f32).sqrt();
    p.chunks_exact(d + 1)
        .map(|row| (dot(&row[..d], pooled) + row[d]).cos() * scale)
        .collect()
}

/// A prediction: the label and a confidence in 0–1 (the softmax of the
/// labels' margins: a ranking score, highest for clear cases).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// The predicted label.
    pub label: String,
    /// Confidence 0–1, two decimals.
    pub confidence: f64,
}

impl Eq for Intent {}

/// How training goes.
#[derive(Clone, Copy, Debug)]
pub struct TrainOptions {
    /// The SVM's C (larger: fit the training data more closely).
    pub c: f32,
    /// Passes over the data at most.
    pub epochs: usize,
    /// Threads to train labels on.
    pub threads: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            c: 1.0,
            epochs: 30,
            threads: 2,
        }
    }
}

/// A trained model.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The labels, sorted.
    pub labels: Vec<String>,
    /// The feature buckets seen in training, sorted.
    pub buckets: Vec<u32>,
    /// Inverse document frequency of each bucket.
    pub idf: Vec<f32>,
    /// Weights, bucket-major: `weights[b * labels + l]`, times `scale[l]`.
    pub weights: Vec<i16>,
    /// Per label: what one weight unit is worth.
    pub scale: Vec<f32>,
    /// Per label: the bias.
    pub bias: Vec<f32>,
    /// How many examples it learned from.
    pub examples: usize,
    /// The token embeddings it was trained with: their pooled vectors and
    /// those vectors' random features are the last [`dense_rows`] rows of
    /// `weights`, after the buckets'.
    pub embeddings: Option<Arc<Embeddings>>,
}

/// The score of each label for a text, best first.
pub type Ranking = Vec<(String, f64)>;

fn fnv(kind: u8, parts: &[&str]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(kind);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(b' ');
        }
        p.bytes().for_each(&mut eat);
    }
    (h ^ (h >> 32)) as u32 % BUCKETS
}

/// The words of a text, lower-cased: letters and digits, apostrophes kept inside.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || (c == '\'' && !cur.is_empty()) {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur).trim_end_matches('\'').to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur.trim_end_matches('\'').to_string());
    }
    out
}

/// The hashed features of a text with their raw counts, sorted by bucket.
/// Bounded: at most the first 2,000 words are read.
pub fn raw_features(text: &str) -> Vec<(u32, f32)> {
    let words = words(text);
    let words = &words[..words.len().min(2000)];
    let mut f: Vec<u32> = Vec::with_capacity(words.len() * 12);
    for (i, w) in words.iter().enumerate() {
        f.push(fnv(b'w', &[w]));
        if let Some(next) = words.get(i + 1) {
            f.push(fnv(b'b', &[w, next]));
        }
        let chars: Vec<char> = std::iter::once('<')
            .chain(w.chars())
            .chain(std::iter::once('>'))
            .collect();
        for n in 2..=5 {
            for g in chars.windows(n) {
                let g: String = g.iter().collect();
                f.push(fnv(b'c', &[&g]));
            }
        }
    }
    counted(f)
}

/// Buckets with their counts, sorted.
fn counted(mut f: Vec<u32>) -> Vec<(u32, f32)> {
    f.sort_unstable();
    let mut out: Vec<(u32, f32)> = Vec::new();
    for b in f {
        match out.last_mut() {
            Some((last, n)) if *last == b => *n += 1.0,
            _ => out.push((b, 1.0)),
        }
    }
    out
}

fn fnv_ids(kind: u8, ids: &[u32]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(kind);
    for b in ids.iter().flat_map(|i| i.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32 % BUCKETS
}

/// The hashed tokens and adjacent token pairs of a text with their counts,
/// sorted by bucket.
fn token_features(ids: &[u32]) -> Vec<(u32, f32)> {
    let mut f: Vec<u32> = Vec::with_capacity(ids.len() * 2);
    for (i, t) in ids.iter().enumerate() {
        f.push(fnv_ids(b't', &[*t]));
        if let Some(next) = ids.get(i + 1) {
            f.push(fnv_ids(b'u', &[*t, *next]));
        }
    }
    counted(f)
}

/// A text's raw blocks: n-grams, and with embeddings its tokens' buckets and pooled vectors.
struct Raw {
    grams: Vec<(u32, f32)>,
    tokens: Vec<(u32, f32)>,
    pooled: Vec<f32>,
}

fn raw(text: &str, embeddings: Option<&Embeddings>) -> Raw {
    let grams = raw_features(text);
    match embeddings {
        Some(e) => {
            let ids = e.tokens(text);
            Raw {
                grams,
                tokens: token_features(&ids),
                pooled: e.pooled(&ids),
            }
        }
        None => Raw {
            grams,
            tokens: Vec::new(),
            pooled: Vec::new(),
        },
    }
}

impl Raw {
    /// The feature vector over a model's rows: the known buckets of each
    /// block weighed by `idf` to unit length (the tokens' then scaled), and
    /// the scaled pooled vectors (the rows after the buckets').
    fn vector(self, index: impl Fn(u32) -> Option<u32>, idf: &[f32]) -> Features {
        let known = |block: Vec<(u32, f32)>| -> Vec<(u32, f32)> {
            let mut x: Vec<(u32, f32)> = block
                .into_iter()
                .filter_map(|(b, n)| index(b).map(|i| (i, n)))
                .collect();
            weigh(&mut x, |i| idf[i]);
            x
        };
        let mut sparse = known(self.grams);
        sparse.extend(known(self.tokens).into_iter().map(|(i, v)| (i, v * TOKEN_WEIGHT)));
        if self.pooled.is_empty() {
            return Features {
                sparse,
                dense: Vec::new(),
            };
        }
        let random = random_features(&self.pooled);
        let mut dense = self.pooled;
        dense.iter_mut().for_each(|v| *v *= EMBED_WEIGHT);
        dense.extend(random);
        Features { sparse, dense }
    }
}

/// A text's features: buckets by index, and the dense rows after them in
/// order (kept apart so their products run over plain slices, which the
/// compiler vectorises).
struct Features {
    sparse: Vec<(u32, f32)>,
    dense: Vec<f32>,
}

impl Features {
    /// `w · x`, the dense part against `w[at..]`.
    fn dot(&self, w: &[f32], at: usize) -> f32 {
        let sparse: f32 = self.sparse.iter().map(|(k, v)| w[*k as usize] * v).sum();
        sparse + dot(&w[at..at + self.dense.len()], &self.dense)
    }

    /// `w += d · x`.
    fn add_to(&self, w: &mut [f32], at: usize, d: f32) {
        for (k, v) in &self.sparse {
            w[*k as usize] += d * v;
        }
        for (a, v) in w[at..at + self.dense.len()].iter_mut().zip(&self.dense) {
            *a += d * v;
        }
    }

    fn norm2(&self) -> f32 {
        self.sparse.iter().map(|(_, v)| v * v).sum::<f32>() + dot(&self.dense, &self.dense)
    }
}

/// A dot product in eight lanes (so it vectorises; a single running sum would not).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for j in 0..8 {
            lanes[j] += x[j] * y[j];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Sublinear tf × idf, L2-normalised, over `(index, count)` pairs.
fn weigh(raw: &mut [(u32, f32)], idf: impl Fn(usize) -> f32) {
    let mut norm = 0.0f32;
    for (i, v) in raw.iter_mut() {
        *v = (1.0 + v.ln()) * idf(*i as usize);
        norm += *v * *v;
    }
    let norm = norm.sqrt().max(1e-9);
    raw.iter_mut().for_each(|(_, v)| *v /= norm);
}

/// Trains a model on `(text, label)` examples. Labels with one example are
/// kept (they are predicted only for near copies). `None` without at least
/// two labels.
pub fn train(examples: &[(&str, &str)], options: TrainOptions) -> Option<Model> {
    train_with(examples, options, None)
}

/// Trains a model as [`train`] does, with pre-trained token embeddings
/// when there are some; the model keeps them.
pub fn train_with(
    examples: &[(&str, &str)],
    options: TrainOptions,
    embeddings: Option<Arc<Embeddings>>,
) -> Option<Model> {
    let mut labels: Vec<String> = examples.iter().map(|(_, l)| l.to_string()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        return None;
    }
    let e = embeddings.as_deref();
    let raws: Vec<Raw> = examples.iter().map(|(t, _)| raw(t, e)).collect();
    let mut buckets: Vec<u32> = raws
        .iter()
        .flat_map(|r| r.grams.iter().chain(&r.tokens))
        .map(|(b, _)| *b)
        .collect();
    buckets.sort_unstable();
    buckets.dedup();
    let index = |b: u32| buckets.binary_search(&b).ok().map(|i| i as u32);
    let mut df = vec![0u32; buckets.len()];
    for (b, _) in raws.iter().flat_map(|r| r.grams.iter().chain(&r.tokens)) {
        df[index(*b).expect("seen bucket") as usize] += 1;
    }
    let n = examples.len() as f32;
    let idf: Vec<f32> = df.iter().map(|d| ((1.0 + n) / (1.0 + *d as f32)).ln() + 1.0).collect();
    let dense = e.map_or(0, |e| dense_rows(e.dims()).expect("a vocabulary's dimensions"));
    let xs: Vec<Features> = raws.into_iter().map(|r| r.vector(index, &idf)).collect();
    let y: Vec<usize> = examples
        .iter()
        .map(|(_, l)| labels.binary_search(&l.to_string()).expect("known label"))
        .collect();
    let dims = buckets.len() + dense;
    let classes: Vec<usize> = (0..labels.len()).collect();
    let threads = options.threads.max(1);
    let chunk = classes.len().div_ceil(threads);
    let solved: Vec<(usize, Vec<f32>, f32)> = std::thread::scope(|s| {
        let handles: Vec<_> = classes
            .chunks(chunk)
            .map(|part| {
                let (xs, y) = (&xs, &y);
                s.spawn(move || {
                    part.iter()
                        .map(|&c| {
                            let (w, b) = binary_svm(xs, y, c, (dims - dense, dims), options);
                            (c, w, b)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("training thread"))
            .collect()
    });
    let l = labels.len();
    let mut weights = vec![0i16; dims * l];
    let mut scale = vec![0f32; l];
    let mut bias = vec![0f32; l];
    for (c, w, b) in solved {
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        scale[c] = max / i16::MAX as f32;
        bias[c] = b;
        for (i, v) in w.iter().enumerate() {
            weights[i * l + c] = (v / scale[c]).round() as i16;
        }
    }
    Some(Model {
        labels,
        buckets,
        idf,
        weights,
        scale,
        bias,
        examples: examples.len(),
        embeddings,
    })
}

/// xorshift64*, for a reproducible visiting order.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One label against the rest: dual coordinate descent for the L2-loss SVM
/// with a bias feature of value 1 (Hsieh et al., 2008). Returns the weights and bias.
/// `dims`: where the dense rows start, and all rows.
fn binary_svm(xs: &[Features], y: &[usize], class: usize, dims: (usize, usize), o: TrainOptions) -> (Vec<f32>, f32) {
    let diag = 0.5 / o.c;
    let (at, dims) = dims;
    let mut w = vec![0f32; dims];
    let mut b = 0f32;
    let mut alpha = vec![0f32; xs.len()];
    let qii: Vec<f32> = xs.iter().map(|x| x.norm2() + 1.0 + diag).collect();
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ class as u64);
    for _ in 0..o.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut max_pg = 0f32;
        for &i in &order {
            let yi = if y[i] == class { 1.0 } else { -1.0 };
            let x = &xs[i];
            let wx = x.dot(&w, at) + b;
            let g = yi * wx - 1.0 + diag * alpha[i];
            let pg = if alpha[i] == 0.0 { g.min(0.0) } else { g };
            max_pg = max_pg.max(pg.abs());
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / qii[i]).max(0.0);
                let d = (alpha[i] - old) * yi;
                x.add_to(&mut w, at, d);
                b += d;
            }
        }
        if max_pg < 0.01 {
            break;
        }
    }
    (w, b)
}

impl Model {
    /// Every label's margin for a text, best first.
    pub fn scores(&self, text: &str) -> Vec<(usize, f32)> {
        self.scores_of(raw(text, self.embeddings.as_deref()))
    }

    fn scores_of(&self, raw: Raw) -> Vec<(usize, f32)> {
        let index = |b: u32| self.buckets.binary_search(&b).ok().map(|i| i as u32);
        let x = raw.vector(index, &self.idf);
        let l = self.labels.len();
        let mut acc = vec![0f32; l];
        let dense = x.dense.iter().enumerate().map(|(j, v)| (self.buckets.len() + j, *v));
        for (i, v) in x.sparse.iter().map(|(i, v)| (*i as usize, *v)).chain(dense) {
            let row = &self.weights[i * l..(i + 1) * l];
            for (a, w) in acc.iter_mut().zip(row) {
                *a += f32::from(*w) * v;
            }
        }
        let mut out: Vec<(usize, f32)> = acc
            .iter()
            .enumerate()
            .map(|(c, a)| (c, a * self.scale[c] + self.bias[c]))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }

    /// The labels with their confidences (softmax over the margins), best first.
    pub fn rank(&self, text: &str) -> Ranking {
        self.rank_of(raw(text, self.embeddings.as_deref()))
    }

    fn rank_of(&self, raw: Raw) -> Ranking {
        let scores = self.scores_of(raw);
        let top = scores.first().map(|s| s.1).unwrap_or(0.0);
        let exp: Vec<f32> = scores.iter().map(|(_, s)| ((s - top) * SHARPNESS).exp()).collect();
        let sum: f32 = exp.iter().sum();
        scores
            .iter()
            .zip(exp)
            .map(|((c, _), e)| (self.labels[*c].clone(), round2(f64::from(e / sum))))
            .collect()
    }

    /// The best label for a text, with its confidence; `None` for a text
    /// with no word the model knows (nor, with embeddings, any token).
    pub fn predict(&self, text: &str) -> Option<Intent> {
        let raw = raw(text, self.embeddings.as_deref());
        if !raw
            .grams
            .iter()
            .chain(&raw.tokens)
            .any(|(b, _)| self.buckets.binary_search(b).is_ok())
            && raw.pooled.iter().all(|v| *v == 0.0)
        {
            return None;
        }
        self.rank_of(raw)
            .into_iter()
            .next()
            .map(|(label, confidence)| Intent { label, confidence })
    }
}

/// Margins are about ±1; this spreads them into a usable 0–1 confidence.
const SHARPNESS: f32 = 5.0;

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<(&'static str, &'static str)> {
        vec![
            ("my card has not arrived yet", "card_arrival"),
            ("when will my new card arrive", "card_arrival"),
            ("still waiting for the card in the post", "card_arrival"),
            ("I want my money back for this order", "refund"),
            ("please refund the payment", "refund"),
            ("how do I get a refund", "refund"),
            ("I forgot my password and cannot log in", "login"),
            ("the login page says wrong password", "login"),
            ("reset my password please", "login"),
        ]
    }

    #[test]
    fn it_learns_labels_and_ranks_them() {
        let model = train(&examples(), TrainOptions::default()).unwrap();
        assert_eq!(model.labels, ["card_arrival", "login", "refund"]);
        for (text, want) in [
            ("has my card been posted? it did not arrive", "card_arrival"),
            ("can I have a refund of my money", "refund"),
            ("password reset does not work", "login"),
        ] {
            let got = model.predict(text).unwrap();
            assert_eq!(got.label, want, "{text}");
            assert!(got.confidence > 0.34 && got.confidence <= 1.0, "{got:?}");
        }
        let ranking = model.rank("refund");
        assert_eq!(ranking.len(), 3);
        assert!(ranking[0].1 >= ranking[1].1 && ranking[1].1 >= ranking[2].1);
        assert_eq!(model.predict("zzzz qqqq"), None, "no known feature");
    }

    #[test]
    fn token_embeddings_carry_words_no_example_used() {
        // Three topics, each a direction; the test's words are never in the examples.
        let words: [(&str, usize); 12] = [
            ("▁card", 0),
            ("▁arrived", 0),
            ("▁post", 0),
            ("▁courier", 0),
            ("▁refund", 1),
            ("▁money", 1),
            ("▁back", 1),
            ("▁chargeback", 1),
            ("▁password", 2),
            ("▁login", 2),
            ("▁reset", 2),
            ("▁passphrase", 2),
        ];
        let mut vocab = vec!["<unk>".to_string(), "▁".to_string()];
        let mut table = vec![0u16; 2 * 4];
        for (w, topic) in words {
            vocab.push(w.to_string());
            for d in 0..4 {
                let v = if d == topic { 1.0 } else { 0.1 * (w.len() % 3) as f32 };
                table.push(crate::core::embed::f32_to_f16(v));
            }
        }
        let e = Arc::new(Embeddings::new(vocab, 4, table).unwrap());
        let with = train_with(&examples(), TrainOptions::default(), Some(e)).unwrap();
        let without = train(&examples(), TrainOptions::default()).unwrap();
        let unseen = [
            ("courier", "card_arrival"),
            ("chargeback", "refund"),
            ("passphrase", "login"),
        ];
        for (text, want) in unseen {
            assert_eq!(with.predict(text).unwrap().label, want, "{text}");
        }
        let right = |m: &Model| {
            unseen
                .iter()
                .filter(|(t, want)| m.predict(t).is_some_and(|p| p.label == *want))
                .count()
        };
        assert!(right(&without) < 3, "without embeddings these words are unknown");
        // What the examples taught still holds with them.
        assert_eq!(with.predict("reset my password").unwrap().label, "login");
        assert_eq!(with.weights.len(), (with.buckets.len() + 12 + 1024) * 3);
    }

    #[test]
    fn one_label_is_no_model_and_features_are_bounded() {
        assert!(train(&[("a", "x"), ("b", "x")], TrainOptions::default()).is_none());
        let long = "word ".repeat(10_000);
        assert!(raw_features(&long).len() < 30, "one distinct word, few distinct grams");
        assert_eq!(words("Hasn't ARRIVED, 2 weeks!"), ["hasn't", "arrived", "2", "weeks"]);
    }
}
