//! How upset a customer sounds: a lexicon score from −1 (furious) to 1
//! (delighted) for English and German, with negation ("not happy"),
//! intensifiers ("very", "sehr"), shouting (CAPS) and exclamation marks, in
//! the manner of VADER. Quoted lines are not the customer's and are skipped.
//! Deterministic and local; [`Sentiment::cues`] says which words counted.

/// A text's sentiment and the words that made it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sentiment {
    /// −1 … 1; 0 is neutral (or nothing to go by).
    pub score: f64,
    /// The words that counted, with their weight after negation and emphasis, strongest first.
    pub cues: Vec<(String, f64)>,
}

/// Word valences (−4 … 4). Stems end in `*` and match any ending.
const LEXICON: &[(&str, f64)] = &[
    // English, negative
    ("angry", -3.0),
    ("annoyed", -2.0),
    ("annoying", -2.0),
    ("awful", -3.0),
    ("bad", -2.0),
    ("broken", -2.0),
    ("bug", -1.0),
    ("cancel", -1.0),
    ("complain*", -2.0),
    ("crap", -3.0),
    ("damn", -2.0),
    ("disappoint*", -2.5),
    ("disgust*", -3.0),
    ("fail*", -2.0),
    ("frustrat*", -2.5),
    ("furious", -3.5),
    ("garbage", -3.0),
    ("hate", -3.0),
    ("horrible", -3.0),
    ("idiot*", -3.0),
    ("incompetent", -3.0),
    ("joke", -1.5),
    ("lawyer", -2.0),
    ("lost", -1.5),
    ("mad", -2.5),
    ("mess", -2.0),
    ("nightmare", -3.0),
    ("outrage*", -3.5),
    ("pathetic", -3.0),
    ("poor", -2.0),
    ("problem*", -1.0),
    ("refund", -1.0),
    ("ridiculous", -3.0),
    ("rude", -2.5),
    ("scam", -3.5),
    ("stupid", -3.0),
    ("sucks", -3.0),
    ("terrible", -3.0),
    ("unacceptable", -3.0),
    ("unhappy", -2.5),
    ("upset", -2.5),
    ("useless", -3.0),
    ("waste", -2.5),
    ("worse", -2.5),
    ("worst", -3.5),
    ("wrong", -2.0),
    // English, positive
    ("amazing", 3.0),
    ("appreciate*", 2.0),
    ("awesome", 3.0),
    ("brilliant", 3.0),
    ("excellent", 3.0),
    ("fantastic", 3.0),
    ("fast", 1.0),
    ("glad", 2.0),
    ("good", 2.0),
    ("great", 3.0),
    ("happy", 2.5),
    ("helpful", 2.0),
    ("kind", 1.5),
    ("love", 3.0),
    ("nice", 2.0),
    ("perfect", 3.0),
    ("pleased", 2.5),
    ("quick", 1.0),
    ("resolved", 1.5),
    ("satisfied", 2.0),
    ("solved", 2.0),
    ("thank*", 2.0),
    ("wonderful", 3.0),
    ("works", 1.0),
    // German, negative
    ("ärger*", -2.5),
    ("betrug", -3.5),
    ("enttäusch*", -2.5),
    ("falsch", -2.0),
    ("frechheit", -3.5),
    ("furchtbar", -3.0),
    ("katastroph*", -3.0),
    ("kaputt", -2.0),
    ("kündig*", -1.5),
    ("lächerlich", -3.0),
    ("mangelhaft", -2.5),
    ("mist", -2.5),
    ("nutzlos", -3.0),
    ("sauer", -2.5),
    ("schlecht*", -2.0),
    ("schlimm*", -2.5),
    ("schrecklich", -3.0),
    ("unverschämt*", -3.5),
    ("unzufrieden", -2.5),
    ("wütend", -3.0),
    ("zumutung", -3.0),
    // German, positive
    ("danke*", 2.0),
    ("dankbar", 2.0),
    ("freue", 2.0),
    ("freundlich*", 2.0),
    ("gelöst", 2.0),
    ("gut", 2.0),
    ("großartig", 3.0),
    ("hervorragend", 3.0),
    ("klasse", 2.5),
    ("perfekt", 3.0),
    ("prima", 2.5),
    ("schnell*", 1.0),
    ("super", 2.5),
    ("toll", 2.5),
    ("zufrieden", 2.0),
];

/// Words that turn the next few around.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "nothing", "nobody", "neither", "nor", "cannot", "without", "nicht", "kein", "keine",
    "keinen", "keinem", "keiner", "nie", "niemals", "nichts", "ohne",
];

/// Words that make the next one stronger, and by how much.
const INTENSIFIERS: &[(&str, f64)] = &[
    ("very", 1.5),
    ("really", 1.4),
    ("extremely", 1.8),
    ("so", 1.3),
    ("totally", 1.5),
    ("completely", 1.5),
    ("absolutely", 1.6),
    ("incredibly", 1.7),
    ("sehr", 1.5),
    ("extrem", 1.8),
    ("total", 1.5),
    ("völlig", 1.5),
    ("absolut", 1.6),
    ("echt", 1.3),
    ("wirklich", 1.4),
];

/// Negation reaches this many words ahead.
const NEGATION_REACH: usize = 3;
/// A negated word counts this much, the other way (VADER's −0.74).
const NEGATION_FACTOR: f64 = -0.74;
/// Shouted (an all-caps word among lower-case text).
const CAPS_FACTOR: f64 = 1.5;
/// Each `!` (up to four) adds this much strength to the text's sign.
const EXCLAMATION: f64 = 0.29;
/// Normalisation: score = sum / sqrt(sum² + ALPHA).
const ALPHA: f64 = 15.0;

/// Whole words by valence, and stems (the words ending in `*`) by their
/// first byte, in the lexicon's order.
type Split = (
    std::collections::HashMap<&'static str, f64>,
    Vec<Vec<(&'static str, f64)>>,
);

/// The lexicon split once: whole words in a map, stems in short lists.
static WORDS: std::sync::LazyLock<Split> = std::sync::LazyLock::new(|| {
    let mut words = std::collections::HashMap::new();
    let mut stems = vec![Vec::new(); 256];
    for (w, v) in LEXICON {
        match w.strip_suffix('*') {
            Some(stem) => stems[usize::from(stem.as_bytes()[0])].push((stem, *v)),
            None => {
                words.insert(*w, *v);
            }
        }
    }
    (words, stems)
});

fn valence(word: &str) -> Option<f64> {
    let (words, stems) = &*WORDS;
    let first = usize::from(*word.as_bytes().first()?);
    words
        .get(word)
        .copied()
        .or_else(|| stems[first].iter().find(|(s, _)| word.starts_with(s)).map(|(_, v)| *v))
}

/// `word` in lower case, borrowed when it already is (most words).
fn folded(word: &str) -> std::borrow::Cow<'_, str> {
    if word.is_ascii() && !word.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(word)
    } else {
        std::borrow::Cow::Owned(word.to_lowercase())
    }
}

/// A score kept to two decimals, so records holding it stay comparable
/// (`Eq`); written and read as a JSON number (`-0.62`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Score(i16);

impl Score {
    /// The score of a value: −1 … 1, or −2 … 2 for a change between two.
    pub fn of(value: f64) -> Score {
        Score((value.clamp(-2.0, 2.0) * 100.0).round() as i16)
    }
    /// The value.
    pub fn value(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl serde::Serialize for Score {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.value())
    }
}

impl<'de> serde::Deserialize<'de> for Score {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Score, D::Error> {
        f64::deserialize(d).map(Score::of)
    }
}

fn is_negation(word: &str) -> bool {
    NEGATIONS.contains(&word) || word.ends_with("n't")
}

/// The sentiment of the customer's own lines of `text`.
pub fn score(text: &str) -> Sentiment {
    let own = crate::core::language::own_text(text, 4_000);
    // Words as written (for CAPS) and folded (for the lexicon).
    let words: Vec<&str> = own
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let mostly_lower = words.iter().filter(|w| w.chars().any(char::is_lowercase)).count() * 2 > words.len();
    let mut sum = 0.0;
    let mut cues: Vec<(String, f64)> = Vec::new();
    for (i, raw) in words.iter().enumerate() {
        // Lexicon words are 2 to 14 letters: longer tokens (hashes, paths) are skipped unread.
        if raw.len() > 40 || raw.len() < 2 {
            continue;
        }
        let word = folded(raw);
        let Some(mut v) = valence(&word) else { continue };
        if let Some(prev) = i.checked_sub(1).map(|p| folded(words[p]))
            && let Some((_, f)) = INTENSIFIERS.iter().find(|(w, _)| *w == prev)
        {
            v *= f;
        }
        if mostly_lower && raw.chars().count() >= 3 && raw.chars().all(|c| !c.is_lowercase()) {
            v *= CAPS_FACTOR;
        }
        let negated = (i.saturating_sub(NEGATION_REACH)..i).any(|j| is_negation(&folded(words[j])));
        if negated {
            v *= NEGATION_FACTOR;
        }
        sum += v;
        cues.push((
            if negated {
                format!("not {word}")
            } else {
                word.into_owned()
            },
            v,
        ));
    }
    if sum != 0.0 {
        let bangs = own.matches('!').count().min(4) as f64;
        sum += sum.signum() * bangs * EXCLAMATION;
    }
    cues.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    cues.truncate(5);
    let score = sum / (sum * sum + ALPHA).sqrt();
    Sentiment {
        score: (score * 100.0).round() / 100.0,
        cues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> f64 {
        score(text).score
    }

    #[test]
    fn angry_calm_and_happy() {
        assert!(s("This is unacceptable. Your service is terrible and I want a refund!") < -0.6);
        assert!(s("Das ist eine Frechheit, der Drucker ist schon wieder kaputt.") < -0.5);
        assert!(s("Thank you so much, that was very helpful!") > 0.6);
        assert!(s("Vielen Dank, das Problem ist gelöst. Super!") > 0.3);
        assert_eq!(s("Please send me the invoice for order 1234."), 0.0);
        assert_eq!(s(""), 0.0);
    }

    #[test]
    fn negation_intensifiers_caps_and_exclamation() {
        assert!(s("I am happy") > 0.0);
        assert!(s("I am not happy") < 0.0, "negation turns it");
        assert!(s("Ich bin nicht zufrieden") < 0.0);
        assert!(s("I am very angry") < s("I am angry"), "intensified");
        assert!(
            s("This is TERRIBLE and slow") < s("This is terrible and slow"),
            "shouted"
        );
        assert!(s("This is terrible!!!") < s("This is terrible"), "exclaimed");
        assert!(s("I don't have a problem") > 0.0, "n't negates too");
    }

    #[test]
    fn quotes_do_not_count_and_cues_say_why() {
        let reply = "Thanks, it works now.\n\n> This is terrible, I hate it, worst service ever!";
        assert!(s(reply) > 0.0);
        let r = score("I am not happy, this is the worst.");
        assert_eq!(r.cues[0].0, "worst");
        assert!(r.cues.iter().any(|(w, v)| w == "not happy" && *v < 0.0), "{:?}", r.cues);
    }
}
