//! Full-text search over tickets with tantivy: one document per ticket holding
//! its subject, requester, every message's sender, text and attachment names
//! (notes too: only the team searches).
//!
//! The index is derived from the store and never the other way round. It
//! lives in `data_dir/search`, follows the store by ticket number (new
//! tickets) and by update time (changed ones), and records how far it got in
//! its commit's payload, so it carries on after a restart. Deleting the folder
//! rebuilds it. Each instance sharing a database keeps its own.

use crate::adapters::store::{Store, StoreError, TicketFilter};
use crate::core::model::{Ticket, TicketId};
use jiff::Timestamp;
use std::path::Path;
use std::sync::Mutex;
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{QueryParser, TermQuery};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term, doc};

/// What can go wrong keeping or reading the index.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The index failed (disk, lock, corrupt files).
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The store failed while the index read it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The folder could not be made.
    #[error("search index at {path}: {error}")]
    Folder {
        /// The folder.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
}

/// How much of a ticket's text is indexed at most (a long thread's first part).
const MAX_TEXT: usize = 1 << 20;

/// Changed tickets are looked for this far before the last update time indexed,
/// so an instance whose clock lags a little is not missed.
const OVERLAP_SECONDS: i64 = 60;

/// Documents indexed between two commits.
const COMMIT_EVERY: usize = 1000;

/// The writer's memory budget (tantivy's floor is 15 MB).
const WRITER_BYTES: usize = 20_000_000;

/// Segments of more live tickets than this are not merged again (until
/// deletions bring them under it). Merging the whole index as it grows cost a
/// daemon building the index of 170,000 tickets 45-60 MiB more at its peak
/// (220-232 MiB against 171-175); it ends in 10 segments instead of 1-3.
const MERGE_MAX_DOCS: usize = 20_000;

/// How far the index has followed the store (the commit's payload).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Progress {
    /// The highest ticket number indexed.
    last_id: u64,
    /// The latest update time (milliseconds) indexed.
    updated_ms: i64,
}

/// What one catch-up did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Tickets (re)indexed.
    pub indexed: usize,
}

/// The writer of one catch-up, made at its first document.
struct Batch<'a> {
    index: &'a SearchIndex,
    writer: Option<IndexWriter>,
    /// Documents since the last commit.
    pending: usize,
    done: CatchUp,
}

impl Batch<'_> {
    /// Indexes `t`; `fresh` when the index cannot hold it yet (numbered past
    /// the last committed), so no deletion of an older document is queued.
    fn put(&mut self, store: &dyn Store, t: &Ticket, fresh: bool, progress: &Progress) -> Result<(), SearchError> {
        let w = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(self.index.writer()?),
        };
        self.index.put(w, store, t, fresh)?;
        self.done.indexed += 1;
        self.pending += 1;
        if self.pending >= COMMIT_EVERY {
            self.commit(progress)?;
        }
        Ok(())
    }

    /// Commits what is pending and lets the writer's merges end.
    fn finish(mut self, progress: &Progress) -> Result<CatchUp, SearchError> {
        self.commit(progress)?;
        if let Some(w) = self.writer {
            w.wait_merging_threads()?;
        }
        Ok(self.done)
    }

    /// Commits what is pending, with `progress`.
    fn commit(&mut self, progress: &Progress) -> Result<(), SearchError> {
        if let Some(w) = &mut self.writer
            && self.pending > 0
        {
            self.index.commit(w, progress)?;
            self.pending = 0;
        }
        Ok(())
    }
}

/// The ticket index.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    ticket: Field,
    updated: Field,
    text: Field,
    /// Held by the one catch-up that may write at a time.
    writing: Mutex<()>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").finish_non_exhaustive()
    }
}

fn schema() -> (Schema, Field, Field, Field) {
    let mut b = Schema::builder();
    let ticket = b.add_u64_field("ticket", INDEXED | STORED | FAST);
    let updated = b.add_i64_field("updated", STORED);
    let text = b.add_text_field("text", TEXT);
    (b.build(), ticket, updated, text)
}

impl SearchIndex {
    /// Opens the index in `dir`, making it when absent. An index of another
    /// layout (an older postdesk's) is set aside and rebuilt.
    pub fn open(dir: &Path) -> Result<SearchIndex, SearchError> {
        let folder = |error| SearchError::Folder {
            path: dir.display().to_string(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(folder)?;
        let (schema, ticket, updated, text) = schema();
        let index = if dir.join("meta.json").exists() {
            match Index::open_in_dir(dir) {
                Ok(i) if i.schema() == schema => i,
                other => {
                    match other {
                        Ok(_) => tracing::warn!(dir = %dir.display(), "search index of another layout: rebuilding it"),
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "unreadable search index: rebuilding it")
                        }
                    }
                    std::fs::remove_dir_all(dir).map_err(folder)?;
                    std::fs::create_dir_all(dir).map_err(folder)?;
                    Index::create_in_dir(dir, schema)?
                }
            }
        } else {
            Index::create_in_dir(dir, schema)?
        };
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(SearchIndex {
            index,
            reader,
            ticket,
            updated,
            text,
            writing: Mutex::new(()),
        })
    }

    /// A writer: one indexing thread, a small budget, merges of small segments only.
    fn writer(&self) -> Result<IndexWriter, SearchError> {
        let w: IndexWriter = self.index.writer_with_num_threads(1, WRITER_BYTES)?;
        let mut merges = tantivy::indexer::LogMergePolicy::default();
        merges.set_max_docs_before_merge(MERGE_MAX_DOCS);
        // A segment a third deleted (tickets indexed again) is merged with its level.
        merges.set_del_docs_ratio_before_merge(1.0 / 3.0);
        w.set_merge_policy(Box::new(merges));
        Ok(w)
    }

    fn progress(&self) -> Result<Progress, SearchError> {
        let metas = self.index.load_metas()?;
        Ok(metas
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default())
    }

    /// The update time (milliseconds) the index holds for a ticket.
    fn indexed_update(&self, searcher: &tantivy::Searcher, id: u64) -> Result<Option<i64>, SearchError> {
        let q = TermQuery::new(Term::from_field_u64(self.ticket, id), IndexRecordOption::Basic);
        // A collector that does not score: no BM25 weight built for each look-up.
        let found = searcher.search(&q, &DocSetCollector)?;
        match found.iter().next() {
            Some(addr) => {
                let d: TantivyDocument = searcher.doc(*addr)?;
                Ok(d.get_first(self.updated).and_then(|v| v.as_i64()))
            }
            None => Ok(None),
        }
    }

    /// Indexes what changed in the store since the last catch-up: tickets
    /// numbered past the last indexed, then tickets updated since the last
    /// update time indexed (less a minute; those whose indexed
    /// update time is theirs are skipped). Commits every 1,000
    /// tickets and at the end, with its progress. Between pages it asks
    /// `stopping`, and when that says yes, commits what it has and returns
    /// (the next catch-up goes on from there), so a shutdown never waits for
    /// a large desk's index to be built.
    pub fn catch_up(&self, store: &dyn Store, stopping: &dyn Fn() -> bool) -> Result<CatchUp, SearchError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut progress = self.progress()?;
        let mut batch = Batch {
            index: self,
            writer: None,
            pending: 0,
            done: CatchUp::default(),
        };
        // New tickets, by number.
        let mut cursor = (progress.last_id > 0).then(|| progress.last_id.to_string());
        // Tickets past the last committed number have no document yet (what a
        // stopped catch-up had not committed is gone with its writer).
        let committed = progress.last_id;
        let mut newest_update = progress.updated_ms;
        loop {
            let page = store.list(&TicketFilter::default(), cursor.as_deref(), 500)?;
            for t in &page.tickets {
                progress.last_id = progress.last_id.max(t.id.0);
                newest_update = newest_update.max(t.updated_at.as_millisecond());
                batch.put(store, t, t.id.0 > committed, &progress)?;
            }
            match page.next {
                Some(n) if !stopping() => cursor = Some(n),
                Some(_) => return batch.finish(&progress),
                None => break,
            }
        }
        batch.commit(&progress)?;
        let searcher = self.reader.searcher();
        // Changed tickets, by update time.
        let since = Timestamp::from_millisecond(progress.updated_ms - OVERLAP_SECONDS * 1000).unwrap_or(Timestamp::MIN);
        let filter = TicketFilter {
            updated_since: Some(since),
            ..TicketFilter::default()
        };
        let mut cursor = None;
        loop {
            let page = store.list(&filter, cursor.as_deref(), 500)?;
            for t in &page.tickets {
                let ms = t.updated_at.as_millisecond();
                newest_update = newest_update.max(ms);
                // One made after the first pass read is taken by number next time.
                if t.id.0 <= progress.last_id && self.indexed_update(&searcher, t.id.0)? != Some(ms) {
                    batch.put(store, t, false, &progress)?;
                }
            }
            match page.next {
                Some(n) if !stopping() => cursor = Some(n),
                // The update time is not moved on: the next catch-up reads these again.
                Some(_) => return batch.finish(&progress),
                None => break,
            }
        }
        let moved = newest_update != progress.updated_ms;
        progress.updated_ms = newest_update;
        if moved && batch.writer.is_none() {
            batch.writer = Some(self.writer()?);
        }
        batch.pending += usize::from(moved);
        batch.finish(&progress)
    }

    fn commit(&self, w: &mut IndexWriter, progress: &Progress) -> Result<(), SearchError> {
        let mut c = w.prepare_commit()?;
        c.set_payload(&serde_json::to_string(progress).unwrap_or_default());
        c.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Replaces a ticket's document (adds it, when `fresh`).
    fn put(&self, w: &IndexWriter, store: &dyn Store, t: &Ticket, fresh: bool) -> Result<(), SearchError> {
        let mut text = String::new();
        text.push_str(&t.subject);
        text.push('\n');
        if let Some(n) = &t.requester.name {
            text.push_str(n);
            text.push(' ');
        }
        text.push_str(&t.requester.email);
        text.push('\n');
        for m in store.messages(t.id)? {
            if text.len() >= MAX_TEXT {
                break;
            }
            if let Some(n) = &m.from.name {
                text.push_str(n);
                text.push(' ');
            }
            text.push_str(&m.from.email);
            text.push('\n');
            text.push_str(&m.text);
            text.push('\n');
            for a in &m.attachments {
                text.push_str(a);
                text.push('\n');
            }
        }
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        // Each deletion is a query the writer runs at its next commit.
        if !fresh {
            w.delete_term(Term::from_field_u64(self.ticket, t.id.0));
        }
        w.add_document(doc!(
            self.ticket => t.id.0,
            self.updated => t.updated_at.as_millisecond(),
            self.text => text,
        ))?;
        Ok(())
    }

    /// Ticket numbers whose text holds every word of `q` (a word may be
    /// `"a phrase"`), highest number first, after skipping `offset`. Query
    /// syntax the parser does not take is read as plain words.
    pub fn search(&self, q: &str, offset: usize, limit: usize) -> Result<Vec<TicketId>, SearchError> {
        let mut parser = QueryParser::for_index(&self.index, vec![self.text]);
        parser.set_conjunction_by_default();
        let (query, _) = parser.parse_query_lenient(q);
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &query,
            &TopDocs::with_limit(limit.max(1))
                .and_offset(offset)
                .order_by_fast_field::<u64>("ticket", Order::Desc),
        )?;
        Ok(top.into_iter().filter_map(|(id, _)| id.map(TicketId)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::store::{Change, StoreSettings};
    use crate::core::model::Mailbox;

    #[test]
    fn a_stopped_catch_up_keeps_what_it_did_and_the_next_goes_on() {
        let dir = std::env::temp_dir().join(format!("postdesk-search-{}", std::process::id()));
        let store = crate::adapters::store::open(&dir.join("data"), &StoreSettings::default()).unwrap();
        let mut change = Change::default();
        for id in 1..=1200 {
            let subject = if id == 1200 { "the last one" } else { "a question" };
            let t = Ticket::new(
                TicketId(id),
                subject,
                Mailbox::new(None, "bob@customer.test"),
                "support",
                "general",
                Timestamp::from_second(1_788_220_800 + id as i64).unwrap(),
            );
            change.ticket(&t);
        }
        store.commit(change).unwrap();
        let index = SearchIndex::open(&dir.join("search")).unwrap();
        // Stopping at once: one page (500 tickets) is kept.
        assert_eq!(index.catch_up(&*store, &|| true).unwrap().indexed, 500);
        assert!(index.search("last", 0, 10).unwrap().is_empty());
        // The next goes on after it, and finds the rest.
        assert_eq!(index.catch_up(&*store, &|| false).unwrap().indexed, 700);
        assert_eq!(index.search("last", 0, 10).unwrap(), [TicketId(1200)]);
        assert_eq!(index.catch_up(&*store, &|| false).unwrap().indexed, 0);
        // One document a ticket, also for one changed after it was indexed.
        assert_eq!(index.search("question", 0, 5000).unwrap().len(), 1199);
        let mut t = store.ticket(TicketId(5)).unwrap().unwrap();
        t.subject = "a changed question".into();
        t.updated_at = Timestamp::from_second(1_788_230_000).unwrap();
        let mut change = Change::default();
        change.ticket(&t);
        store.commit(change).unwrap();
        assert_eq!(index.catch_up(&*store, &|| false).unwrap().indexed, 1);
        assert_eq!(index.search("changed", 0, 10).unwrap(), [TicketId(5)]);
        assert_eq!(index.search("question", 0, 5000).unwrap().len(), 1199);
        drop((index, store));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
