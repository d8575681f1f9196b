//! The language of a customer's text (whatlang, trigram statistics, no
//! network): an ISO 639-1 code when the detector is confident, else nothing.

/// ISO 639-3 (whatlang's codes) to ISO 639-1, for the languages that have one.
const ISO1: &[(&str, &str)] = &[
    ("afr", "af"),
    ("aka", "ak"),
    ("amh", "am"),
    ("ara", "ar"),
    ("aze", "az"),
    ("bel", "be"),
    ("ben", "bn"),
    ("bul", "bg"),
    ("cat", "ca"),
    ("ces", "cs"),
    ("cmn", "zh"),
    ("cym", "cy"),
    ("dan", "da"),
    ("deu", "de"),
    ("ell", "el"),
    ("eng", "en"),
    ("epo", "eo"),
    ("est", "et"),
    ("fin", "fi"),
    ("fra", "fr"),
    ("guj", "gu"),
    ("heb", "he"),
    ("hin", "hi"),
    ("hrv", "hr"),
    ("hun", "hu"),
    ("hye", "hy"),
    ("ind", "id"),
    ("ita", "it"),
    ("jav", "jv"),
    ("jpn", "ja"),
    ("kan", "kn"),
    ("kat", "ka"),
    ("khm", "km"),
    ("kor", "ko"),
    ("lat", "la"),
    ("lav", "lv"),
    ("lit", "lt"),
    ("mal", "ml"),
    ("mar", "mr"),
    ("mkd", "mk"),
    ("mya", "my"),
    ("nep", "ne"),
    ("nld", "nl"),
    ("nob", "nb"),
    ("ori", "or"),
    ("pan", "pa"),
    ("pes", "fa"),
    ("pol", "pl"),
    ("por", "pt"),
    ("ron", "ro"),
    ("rus", "ru"),
    ("sin", "si"),
    ("slk", "sk"),
    ("slv", "sl"),
    ("sna", "sn"),
    ("spa", "es"),
    ("srp", "sr"),
    ("swe", "sv"),
    ("tam", "ta"),
    ("tel", "te"),
    ("tgl", "tl"),
    ("tha", "th"),
    ("tuk", "tk"),
    ("tur", "tr"),
    ("ukr", "uk"),
    ("urd", "ur"),
    ("uzb", "uz"),
    ("vie", "vi"),
    ("yid", "yi"),
    ("zul", "zu"),
];

/// Guesses less sure than this are no answer.
const MIN_CONFIDENCE: f64 = 0.25;

/// Fewer letters than this say too little to guess from.
const MIN_LETTERS: usize = 12;

/// The language of `text` (ISO 639-1, or 639-3 where there is no two-letter
/// code), when the detector is sure enough, among all the languages it knows.
pub fn detect(text: &str) -> Option<String> {
    Languages::default().detect(text)
}

/// The languages a desk's mail is told among: every language whatlang knows
/// (the default), or the desk's own list (`[language] candidates`). A list
/// is faster (whatlang scores each candidate's 300 trigrams per mail) and
/// surer on short mails, which it cannot take for a language the desk never sees.
#[derive(Clone, Debug, Default)]
pub struct Languages {
    /// The list, in whatlang's terms; `None` for all.
    only: Option<Vec<whatlang::Lang>>,
    detector: whatlang::Detector,
}

impl Languages {
    /// Only these languages (ISO 639-1 codes such as `en`, or ISO 639-3 for
    /// those without one); `Err` names a code whatlang does not know.
    pub fn among(codes: &[String]) -> Result<Languages, String> {
        let mut only = Vec::new();
        for code in codes {
            let three = ISO1
                .iter()
                .find(|(_, two)| two == code)
                .map_or(code.as_str(), |(three, _)| three);
            let lang = whatlang::Lang::from_code(three).ok_or_else(|| {
                format!("{code:?} is not a language code the detector knows (ISO 639-1 such as \"en\", else ISO 639-3)")
            })?;
            if !only.contains(&lang) {
                only.push(lang);
            }
        }
        if only.is_empty() {
            return Err("an empty list: name at least one language, or leave the key out for all".into());
        }
        Ok(Languages {
            detector: whatlang::Detector::with_allowlist(only.clone()),
            only: Some(only),
        })
    }

    /// The list's codes, as [`detect`] writes them (`None`: every language).
    pub fn codes(&self) -> Option<Vec<String>> {
        self.only
            .as_ref()
            .map(|l| l.iter().map(|&lang| code_of(lang)).collect())
    }

    /// [`detect`] among these languages. A text in a script none of them is
    /// written in says nothing.
    pub fn detect(&self, text: &str) -> Option<String> {
        // The customer's own words (quoted lines are someone else's); a
        // paragraph tells the language as well as a book, and costs less.
        let own = own_text(text, 300);
        if own.chars().filter(|c| c.is_alphabetic()).count() < MIN_LETTERS {
            return None;
        }
        let info = self.detector.detect(&own)?;
        // whatlang's own "reliable" turns down most one-sentence mails (a clear
        // Spanish sentence scores 0.55); below 0.25 guesses are mostly wrong.
        if info.confidence() < MIN_CONFIDENCE {
            return None;
        }
        // whatlang tells a script of one language (Greek, Thai…) without
        // looking at the list.
        if self.only.as_ref().is_some_and(|only| !only.contains(&info.lang())) {
            return None;
        }
        Some(code_of(info.lang()))
    }
}

/// ISO 639-1 where there is one, else whatlang's ISO 639-3.
fn code_of(lang: whatlang::Lang) -> String {
    let code = lang.code();
    ISO1.iter()
        .find(|(three, _)| *three == code)
        .map_or(code, |(_, two)| two)
        .to_string()
}

/// The unquoted lines of `text`, up to about `limit` bytes (whole lines, cut at a character).
pub fn own_text(text: &str, limit: usize) -> String {
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('>')) {
        if out.len() >= limit {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    if out.len() > limit {
        let mut cut = limit;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// Whether `code` has the shape of a language code (2 or 3 lowercase letters).
pub fn is_code(code: &str) -> bool {
    (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_of_real_sentences() {
        let cases = [
            (
                "Hello, my printer stopped working after the update and I cannot print invoices anymore.",
                "en",
            ),
            (
                "Guten Tag, mein Drucker funktioniert seit dem Update nicht mehr und ich kann keine Rechnungen drucken.",
                "de",
            ),
            (
                "Bonjour, mon imprimante ne fonctionne plus depuis la mise à jour et je ne peux plus imprimer mes factures.",
                "fr",
            ),
            (
                "Hola, mi impresora dejó de funcionar después de la actualización y ya no puedo imprimir facturas.",
                "es",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(detect(text).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn too_little_or_only_quotes_says_nothing() {
        assert_eq!(detect("ok thx"), None);
        assert_eq!(detect("Thanks, that fixed it!"), None, "too short to be sure");
        assert_eq!(detect(""), None);
        assert_eq!(detect("12345 67890 !!!"), None);
        // The quoted German is not the customer's language; the answer is English.
        let reply = "Thank you, that solved the problem with my account completely.\n\n> Guten Tag, bitte setzen Sie Ihr Passwort zurück und melden Sie sich erneut an.";
        assert_eq!(detect(reply).as_deref(), Some("en"));
    }

    #[test]
    fn a_desks_candidates_decide_short_mails_and_leave_out_the_rest() {
        let desk = Languages::among(&["en".into(), "de".into()]).unwrap();
        // Too short for whatlang among all its languages (it leans to Shona
        // or Welsh, unsure); sure enough between two.
        for (short, want) in [
            ("My parcel never arrived", "en"),
            ("Invoice attached, please check", "en"),
            ("Bitte Rechnung senden", "de"),
        ] {
            assert_eq!(detect(short), None, "{short}");
            assert_eq!(desk.detect(short).as_deref(), Some(want), "{short}");
        }
        // Greek is the one language of its script: whatlang tells it
        // without the list, the desk does not.
        let greek = "Καλημέρα, ο εκτυπωτής μου δεν λειτουργεί μετά την ενημέρωση.";
        assert_eq!(detect(greek).as_deref(), Some("el"));
        assert_eq!(desk.detect(greek), None);
        // Quoted lines still are not the customer's.
        assert_eq!(desk.detect("> Guten Tag, bitte setzen Sie Ihr Passwort zurück."), None);
        assert!(Languages::among(&["xx".into()]).is_err());
        assert!(Languages::among(&[]).is_err());
    }

    #[test]
    fn codes() {
        assert!(is_code("de") && is_code("fil"));
        assert!(!is_code("DE") && !is_code("d") && !is_code("deutsch") && !is_code("d1"));
    }
}
