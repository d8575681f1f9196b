//! The knowledge base (`[knowledge] path`): a folder of Markdown articles,
//! indexed in memory with tantivy (BM25) when the daemon starts and on each
//! reload, asked for the articles that answer a customer's first mail.
//!
//! An article is `SLUG.md`: an optional front matter between `---` lines
//! (`title:`, `queue:`, `tags:` as `a, b` or `[a, b]`), then Markdown whose
//! first `# ` heading is the title when the front matter has none. Words are
//! lower-cased, English and German stop words dropped, English stems taken,
//! so "refunds" finds "refund". The title counts twice.

use std::path::Path;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer, TokenStream,
};
use tantivy::{Index, IndexReader, TantivyDocument, Term, doc};

/// Most articles read from the folder.
const MAX_ARTICLES: usize = 10_000;

/// Largest article read (bytes).
const MAX_ARTICLE_BYTES: u64 = 1 << 20;

/// Most distinct words of a mail asked about.
const MAX_QUERY_TERMS: usize = 64;

/// One article.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Article {
    /// Its file name without `.md`: the address `/help/SLUG`.
    pub slug: String,
    /// Its title.
    pub title: String,
    /// Its Markdown (the front matter and the title heading left out).
    pub body: String,
    /// Only suggested for tickets of this queue, when set.
    pub queue: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

/// An article that matches a text, with its BM25 score.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Suggestion {
    /// The article's slug.
    pub slug: String,
    /// Its title.
    pub title: String,
    /// How well it matches (BM25; higher is better).
    pub score: f32,
}

/// The articles and their index.
pub struct Knowledge {
    articles: Vec<Article>,
    reader: IndexReader,
    index: Index,
    title: tantivy::schema::Field,
    body: tantivy::schema::Field,
    number: tantivy::schema::Field,
}

impl std::fmt::Debug for Knowledge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knowledge")
            .field("articles", &self.articles.len())
            .finish()
    }
}

/// Words of mail that say nothing of what it is about (beyond tantivy's
/// short English list): pronouns, greetings, courtesy, question words.
const MAIL_WORDS: &str = "i me my mine myself you your yours we us our ours he him his she her they them \
    can could would should shall may might must do does did done have has had am been being get got \
    please pls hello hi hey dear thanks thank regards best kind cheers sir madam team \
    what when where why how which who whom whose here there also just still very really some any all \
    hallo danke bitte grüße gruß liebe lieber sehr geehrte geehrter";

/// The analyzer of articles and mails alike.
fn analyzer() -> TextAnalyzer {
    let stop = |l| StopWordFilter::new(l).expect("tantivy has English and German stop words");
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(stop(Language::English))
        .filter(stop(Language::German))
        .filter(StopWordFilter::remove(MAIL_WORDS.split_whitespace().map(String::from)))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// Splits an article's front matter and title from its Markdown.
pub fn parse_article(slug: &str, text: &str) -> Article {
    let text = text.replace("\r\n", "\n");
    let mut title = None;
    let mut queue = None;
    let mut tags = Vec::new();
    let mut rest = text.as_str();
    if let Some(after) = rest.strip_prefix("---\n")
        && let Some((front, body)) = after.split_once("\n---")
    {
        for line in front.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim().trim_matches('"');
            match k.trim() {
                "title" if !v.is_empty() => title = Some(v.to_string()),
                "queue" if !v.is_empty() => queue = Some(v.to_string()),
                "tags" => {
                    tags = v
                        .trim_matches(['[', ']'])
                        .split(',')
                        .map(|t| t.trim().trim_matches('"').to_string())
                        .filter(|t| !t.is_empty())
                        .collect()
                }
                _ => {}
            }
        }
        rest = body.strip_prefix('\n').unwrap_or(body);
    }
    let mut body = rest.trim_start().to_string();
    if title.is_none()
        && let Some(first) = body.lines().next()
        && let Some(h) = first.strip_prefix("# ")
    {
        title = Some(h.trim().to_string());
        body = body[first.len()..].trim_start().to_string();
    }
    Article {
        slug: slug.to_string(),
        title: title.unwrap_or_else(|| slug.replace(['-', '_'], " ")),
        body,
        queue,
        tags,
    }
}

/// Whether a file stem may be a slug (it becomes a path segment).
fn slug_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Knowledge {
    /// Reads every `*.md` of `dir` (not below it) and indexes them.
    pub fn load(dir: &Path) -> Result<Knowledge, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("[knowledge] path {}: {e}", dir.display()))?;
        let mut articles = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| format!("[knowledge] path {}: {e}", dir.display()))?
                .path();
            if path.extension().is_none_or(|x| x != "md") {
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()).filter(|s| slug_ok(s)) else {
                tracing::warn!(file = %path.display(), "knowledge article skipped: its name must be letters, digits, - and _ only");
                continue;
            };
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size > MAX_ARTICLE_BYTES {
                tracing::warn!(file = %path.display(), size, "knowledge article skipped: larger than 1 MiB");
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            articles.push(parse_article(stem, &text));
            if articles.len() >= MAX_ARTICLES {
                break;
            }
        }
        articles.sort_by(|a, b| a.slug.cmp(&b.slug));
        Knowledge::build(articles).map_err(|e| format!("[knowledge] index: {e}"))
    }

    /// Indexes `articles` in memory.
    pub fn build(articles: Vec<Article>) -> tantivy::Result<Knowledge> {
        let mut schema = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("kb")
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let title = schema.add_text_field("title", text.clone());
        let body = schema.add_text_field("body", text);
        let number = schema.add_u64_field("number", STORED);
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register("kb", analyzer());
        let mut writer = index.writer_with_num_threads(1, 15_000_000)?;
        for (i, a) in articles.iter().enumerate() {
            writer.add_document(doc!(title => a.title.clone(), body => a.body.clone(), number => i as u64))?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(Knowledge {
            articles,
            reader,
            index,
            title,
            body,
            number,
        })
    }

    /// How many articles there are.
    pub fn len(&self) -> usize {
        self.articles.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.articles.is_empty()
    }

    /// Every article, by slug.
    pub fn articles(&self) -> &[Article] {
        &self.articles
    }

    /// The article named `slug`.
    pub fn article(&self, slug: &str) -> Option<&Article> {
        self.articles.iter().find(|a| a.slug == slug)
    }

    /// The articles that match `text` best (at most `limit`, best first),
    /// those for another queue left out; with their scores, whatever they are.
    pub fn rank(&self, text: &str, queue: &str, limit: usize) -> Vec<Suggestion> {
        let mut terms: Vec<String> = Vec::new();
        let mut a = analyzer();
        let mut stream = a.token_stream(text);
        while stream.advance() {
            let t = stream.token().text.clone();
            if t.len() > 1 && !terms.contains(&t) {
                terms.push(t);
                if terms.len() >= MAX_QUERY_TERMS {
                    break;
                }
            }
        }
        if terms.is_empty() || self.articles.is_empty() {
            return Vec::new();
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in &terms {
            for (field, boost) in [(self.title, 2.0), (self.body, 1.0)] {
                let q = TermQuery::new(Term::from_field_text(field, t), IndexRecordOption::WithFreqs);
                clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost))));
            }
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let _ = &self.index;
        let Ok(top) = searcher.search(
            &query,
            &TopDocs::with_limit(self.articles.len().min(1000)).order_by_score(),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (score, address) in top {
            let Ok(d) = searcher.doc::<TantivyDocument>(address) else {
                continue;
            };
            let Some(n) = d.get_first(self.number).and_then(|v| v.as_u64()) else {
                continue;
            };
            let Some(a) = self.articles.get(n as usize) else {
                continue;
            };
            if a.queue.as_deref().is_some_and(|q| q != queue) {
                continue;
            }
            out.push(Suggestion {
                slug: a.slug.clone(),
                title: a.title.clone(),
                score,
            });
            if out.len() >= limit {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kb() -> Knowledge {
        Knowledge::build(vec![
            parse_article(
                "refunds",
                "---\ntitle: How to get a refund\nqueue: billing\ntags: [money, refund]\n---\nAsk for a refund within 30 days; the money is back on your card in a week.\n",
            ),
            parse_article(
                "reset-password",
                "# Resetting your password\n\nClick \"Forgot password\" on the sign-in page and follow the link we mail you.\n",
            ),
            parse_article("printer", "# Printer prints blank pages\n\nReplace the toner cartridge.\n"),
        ])
        .unwrap()
    }

    #[test]
    fn front_matter_and_title_heading_are_read() {
        let a = parse_article(
            "refunds",
            "---\ntitle: \"How to get a refund\"\nqueue: billing\ntags: money, refund\n---\nBody.",
        );
        assert_eq!(
            (a.title.as_str(), a.queue.as_deref(), a.tags.clone(), a.body.as_str()),
            (
                "How to get a refund",
                Some("billing"),
                vec!["money".to_string(), "refund".into()],
                "Body."
            )
        );
        let b = parse_article("x", "# The title\n\nThe text.");
        assert_eq!((b.title.as_str(), b.body.as_str()), ("The title", "The text."));
        assert_eq!(parse_article("no-title", "Just text.").title, "no title");
    }

    #[test]
    fn the_best_article_comes_first_and_other_queues_are_left_out() {
        let kb = kb();
        let got = kb.rank("I forgot my password and cannot sign in", "general", 3);
        assert_eq!(got[0].slug, "reset-password", "{got:?}");
        // Stems: "refunds" finds "refund"; the billing article only for billing.
        assert_eq!(kb.rank("Where are my refunds?", "billing", 3)[0].slug, "refunds");
        assert!(
            kb.rank("Where are my refunds?", "general", 3)
                .iter()
                .all(|s| s.slug != "refunds")
        );
        // Stop words and mail's courtesies alone match nothing.
        assert!(kb.rank("the and is of what", "general", 3).is_empty());
        assert!(
            kb.rank("Hello, can you please send me the invoice? Thanks", "general", 3)
                .is_empty()
        );
    }
}
