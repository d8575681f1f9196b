//! Intent classification (not a timed test): `cargo bench --bench intent`.
//!
//! 5-fold cross-validation on `../shared/datasets/banking77/train.csv`
//! (10,003 customer-support queries, 77 intents; read with the same reader
//! as `postdesk train --csv`) when it is there: accuracy per fold, the
//! median training time of a fold, prediction time per query (median of the
//! folds' means) and the size of the model file trained on everything.
//! Without the dataset, and under `cargo test`, a generated set of intents
//! goes through the same steps.
//!
//! With pre-trained token embeddings in `target/embeddings` (fetched by
//! `tests/fetch-embeddings`; `POSTDESK_BENCH_EMBEDDINGS=DIR` elsewhere) the
//! folds run twice, without and with them, and the gain is printed.
//! `POSTDESK_BENCH_FOLDS=10` scores 10 folds instead of 5;
//! `POSTDESK_BENCH_SHUFFLE=N` deals the rows into folds by a shuffle (seed
//! N) instead of by their index: other splits than the default ones, on
//! which the model's weights were chosen.

use postdesk::core::embed::Embeddings;
use postdesk::core::intent::{Model, TrainOptions, train_with};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/banking77/train.csv");
    let (name, rows) = match full.then(|| postdesk::adapters::intent::read_csv(&csv, "text", "category")) {
        Some(Ok(rows)) => ("banking77".to_string(), rows),
        _ => ("generated".to_string(), generated()),
    };
    let folds: usize = match std::env::var("POSTDESK_BENCH_FOLDS") {
        Ok(v) => v.parse().expect("POSTDESK_BENCH_FOLDS: a number of folds, 2 or more"),
        Err(_) => 5,
    };
    // Fold k holds the rows whose index is k modulo the folds (the CSV is
    // grouped by intent, so each fold has its share of every intent), in a
    // fixed shuffled order; with POSTDESK_BENCH_SHUFFLE=N the rows are dealt
    // into folds by their place in the shuffle instead: other splits.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let shuffle = std::env::var("POSTDESK_BENCH_SHUFFLE")
        .ok()
        .map(|v| v.parse::<u64>().expect("POSTDESK_BENCH_SHUFFLE: a number"));
    let mut rng = shuffle.map_or(0x2545_f491_4f6c_dd1du64, |n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for i in (1..order.len()).rev() {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let j = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let fold_of: Vec<usize> = match shuffle {
        None => (0..rows.len()).map(|i| i % folds).collect(),
        Some(_) => {
            let mut f = vec![0; rows.len()];
            for (place, &i) in order.iter().enumerate() {
                f[i] = place % folds;
            }
            f
        }
    };
    let labels: std::collections::HashSet<&str> = rows.iter().map(|(_, l)| l.as_str()).collect();
    println!("{name}: {} examples, {} labels, {folds}-fold", rows.len(), labels.len());
    // Pre-trained token embeddings, where tests/fetch-embeddings put them.
    let dir = std::env::var_os("POSTDESK_BENCH_EMBEDDINGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/embeddings"));
    let (weights, vocabulary) = (dir.join("l2_supercat_256.safetensors"), dir.join("vocabulary.txt"));
    let embeddings = (full && weights.is_file())
        .then(|| Arc::new(postdesk::adapters::intent::load_embeddings(&weights, &vocabulary).expect("embeddings")));
    let mut runs = vec![("n-grams", None)];
    if let Some(e) = &embeddings {
        runs.push(("n-grams and token embeddings", Some(e.clone())));
    } else if full {
        println!(
            "(no token embeddings in {}: tests/fetch-embeddings fetches them)",
            dir.display()
        );
    }
    let mut means = Vec::new();
    for (what, e) in runs {
        println!("-- {what}");
        let mean = cross_validate(&rows, &order, &fold_of, folds, e.clone());
        assert!(mean > 0.5, "accuracy {mean} is no better than chance on {name}");
        means.push(mean);
        let all: Vec<(&str, &str)> = rows.iter().map(|(t, l)| (t.as_str(), l.as_str())).collect();
        let started = Instant::now();
        let model = train_with(&all, TrainOptions::default(), e).expect("two labels at least");
        let secs = started.elapsed().as_secs_f64();
        let size = file_size(&model);
        // A hostile mail: 4,000 characters without a space (as much as the
        // pipeline reads of a body), letters in no pattern.
        let mut r = 0x9e37_79b9_7f4a_7c15u64;
        let word: String = (0..4000)
            .map(|_| {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                char::from(b'a' + (r % 26) as u8)
            })
            .collect();
        let started = Instant::now();
        model.predict(&word);
        println!(
            "a 4,000-character word:  {:.2} ms to read",
            started.elapsed().as_secs_f64() * 1e3
        );
        println!(
            "on all {} examples:  training {secs:.2} s, model file {:.1} MB (target ≤ 50 MB)",
            rows.len(),
            size as f64 / 1e6
        );
    }
    if let [without, with] = means[..] {
        println!(
            "embeddings: {:+.2} points ({:.2}% → {:.2}%)",
            (with - without) * 100.0,
            without * 100.0,
            with * 100.0
        );
    }
}

/// Trains on all folds but one and tests on that one, for each fold; prints
/// the figures and returns the mean accuracy.
fn cross_validate(
    rows: &[(String, String)],
    order: &[usize],
    fold_of: &[usize],
    folds: usize,
    e: Option<Arc<Embeddings>>,
) -> f64 {
    let mut accuracies = Vec::new();
    let mut train_secs = Vec::new();
    let mut predict_us = Vec::new();
    for k in 0..folds {
        let (test, learn): (Vec<usize>, Vec<usize>) = order.iter().partition(|&&i| fold_of[i] == k);
        let examples: Vec<(&str, &str)> = learn
            .iter()
            .map(|&i| (rows[i].0.as_str(), rows[i].1.as_str()))
            .collect();
        let started = Instant::now();
        let model = train_with(&examples, TrainOptions::default(), e.clone()).expect("two labels at least");
        train_secs.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let right = test
            .iter()
            .filter(|&&i| model.predict(&rows[i].0).is_some_and(|p| p.label == rows[i].1))
            .count();
        predict_us.push(started.elapsed().as_secs_f64() * 1e6 / test.len() as f64);
        let acc = right as f64 / test.len() as f64;
        println!(
            "fold {k}: accuracy {:.2}% ({right}/{}), training {:.2} s",
            acc * 100.0,
            test.len(),
            train_secs[k]
        );
        accuracies.push(acc);
    }
    let mean = accuracies.iter().sum::<f64>() / folds as f64;
    println!("mean accuracy:           {:.2}% (target ≥ 92%)", mean * 100.0);
    println!(
        "training, median fold:   {:.2} s (target ≤ 15 s)",
        median(&mut train_secs)
    );
    println!(
        "prediction per query:    {:.1} µs (median of the folds' means; target ≤ 1 ms)",
        median(&mut predict_us)
    );
    mean
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn file_size(model: &Model) -> u64 {
    let dir = std::env::temp_dir().join(format!("postdesk-bench-intent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = postdesk::adapters::intent::path(&dir);
    let header = postdesk::adapters::intent::Header {
        labels: model.labels.clone(),
        buckets: model.buckets.len(),
        examples: model.examples,
        source: "bench".into(),
        trained_at: String::new(),
        embeddings: model
            .embeddings
            .as_ref()
            .map(|e| postdesk::adapters::intent::EmbeddingsHeader::of(e, Path::new("bench"))),
    };
    postdesk::adapters::intent::save(model, &header, &path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    std::fs::remove_dir_all(dir).unwrap();
    size
}

/// Six intents, each asked in varied words.
fn generated() -> Vec<(String, String)> {
    let intents: [(&str, &[&str]); 6] = [
        (
            "card_arrival",
            &[
                "my card has not arrived",
                "where is my new card",
                "card still not delivered",
            ],
        ),
        (
            "refund",
            &["I want a refund", "give my money back", "refund the payment please"],
        ),
        (
            "password",
            &["I forgot my password", "cannot log in to my account", "reset my login"],
        ),
        (
            "exchange_rate",
            &[
                "what exchange rate do you use",
                "the rate for euros was wrong",
                "currency conversion fee",
            ],
        ),
        (
            "top_up",
            &["my top up failed", "how do I add money", "top-up by card did not work"],
        ),
        (
            "close_account",
            &[
                "close my account",
                "I want to delete my profile",
                "cancel the account for good",
            ],
        ),
    ];
    let extras = ["", " please", " today", " asap", " thanks", " since monday", " again"];
    let mut out = Vec::new();
    for (label, phrases) in intents {
        for p in phrases {
            for e in extras {
                out.push((format!("Hello, {p}{e}."), label.to_string()));
            }
        }
    }
    out
}
