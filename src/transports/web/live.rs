//! The dashboard's live updates: `GET /dashboard/live` is a stream of
//! server-sent events. Every [`POLL`] it asks the store two cheap questions
//! (the status counters, and which tickets changed since the last look, by
//! the update index) and says `changed` when either answer moved, and at
//! least every [`CLOCKS`] so the SLA time left keeps moving. `static/live.js`
//! answers `changed` by fetching the page again and swapping its `<main>`;
//! without script the page's `<noscript>` refresh does the same every 30 s.
//! The stream ends with `signed-out` when the session ends or the dashboard
//! is turned off, and holds one of at most [`MAX_STREAMS`] places.

use super::Web;
use super::portal::pipeline;
use super::team::{off, session};
use crate::adapters::store::{Count, Store, StoreError, TicketFilter};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often a stream looks at the store.
const POLL: Duration = Duration::from_secs(2);

/// A `changed` at least this often: time left and ages move by themselves.
const CLOCKS: Duration = Duration::from_secs(60);

/// Live dashboards at once; more are answered 503 and refresh by themselves.
pub(super) const MAX_STREAMS: usize = 32;

/// Tickets read from the update index in one look.
const LOOK_PAGE: usize = 500;

/// What one look saw.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    counts: Vec<Count>,
    /// The newest update time seen so far.
    updated: Timestamp,
}

/// The counters and the newest update at or after `since`.
fn look(store: &dyn Store, since: Timestamp) -> Result<Seen, StoreError> {
    let counts = store.counts()?;
    let filter = TicketFilter {
        updated_since: Some(since),
        ..TicketFilter::default()
    };
    let page = store.list(&filter, None, LOOK_PAGE)?;
    let updated = page.tickets.iter().map(|t| t.updated_at).fold(since, Timestamp::max);
    Ok(Seen { counts, updated })
}

/// A place among the [`MAX_STREAMS`], given back when the stream is dropped.
struct Place(Arc<Web>);

impl Place {
    fn take(web: &Arc<Web>) -> Option<Place> {
        let taken = web.live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_STREAMS).then_some(n + 1)
        });
        taken.ok().map(|_| Place(web.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One stream's state between events.
struct Live {
    place: Place,
    headers: HeaderMap,
    seen: Seen,
    said: Instant,
}

/// `GET /dashboard/live`.
pub async fn live(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let p = pipeline(&web);
    if let Some(r) = off(&p) {
        return r;
    }
    let (store, h) = (p.store.clone(), headers.clone());
    let first = tokio::task::spawn_blocking(move || {
        if session(&p, &h).is_none() {
            return Ok(None);
        }
        look(&*store, Timestamp::now()).map(Some)
    })
    .await;
    let seen = match first {
        Ok(Ok(Some(seen))) => seen,
        Ok(Ok(None)) => return (StatusCode::UNAUTHORIZED, "sign in first: /login\n").into_response(),
        Ok(Err(e)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the store cannot answer just now: {e}\n"),
            )
                .into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let Some(place) = Place::take(&web) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "60")],
            "too many live dashboards just now; the page refreshes itself instead\n",
        )
            .into_response();
    };
    let state = Live {
        place,
        headers,
        seen,
        said: Instant::now(),
    };
    let hello = Event::default()
        .event("ready")
        .data("on")
        .retry(Duration::from_secs(10));
    use futures::StreamExt;
    let events =
        futures::stream::once(futures::future::ready(Ok(hello))).chain(futures::stream::unfold(Some(state), next));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The stream's next event: `changed` when the desk moved (or a minute
/// passed), `signed-out` once the session or the dashboard ended, and then
/// nothing (the state is gone).
async fn next(state: Option<Live>) -> Option<(Result<Event, std::convert::Infallible>, Option<Live>)> {
    let mut st = state?;
    loop {
        tokio::time::sleep(POLL).await;
        let p = pipeline(&st.place.0);
        let (headers, since) = (st.headers.clone(), st.seen.updated);
        let looked = tokio::task::spawn_blocking(move || {
            if off(&p).is_some() || session(&p, &headers).is_none() {
                return None;
            }
            Some(look(&*p.store, since))
        })
        .await
        .unwrap_or(None);
        let seen = match looked {
            None => return Some((Ok(Event::default().event("signed-out").data("/login")), None)),
            // The store is busy or away: say nothing, look again.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "live dashboard: the store did not answer");
                continue;
            }
            Some(Ok(seen)) => seen,
        };
        let moved = seen != st.seen;
        st.seen = seen;
        if moved || st.said.elapsed() >= CLOCKS {
            st.said = Instant::now();
            let changed = Event::default().event("changed").data(Timestamp::now().to_string());
            return Some((Ok(changed), Some(st)));
        }
    }
}
