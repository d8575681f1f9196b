//! The PostgreSQL backend: the same [`Store`] over tables (see
//! `migrations/`), for sites that run several postdesk instances on one
//! database or keep their data on the database server they already run.
//!
//! The trait is synchronous (the pipeline runs off the async workers); the
//! backend keeps its own current-thread tokio runtime for tokio-postgres and
//! a deadpool pool, and the calling thread drives each query on it.
//!
//! Sharing one database safely:
//! - unique keys decide races: a stored Message-ID, a source position and
//!   the next ticket number (compare-and-set) are taken once, so a second
//!   instance's commit fails with [`StoreError::Conflict`], nothing of it is
//!   kept, and the mail is processed again (and found a duplicate);
//! - a ticket write names the revision it was read at ([`Ticket::revision`]):
//!   two instances changing one ticket cannot overwrite each other, the
//!   second conflicts and is redone from a fresh read;
//! - a commit is one round trip: BEGIN, its statements and COMMIT pipelined,
//!   with the must-touch-a-row checks raised by the server;
//! - mailboxes and the timers run under leases (a row with holder and
//!   expiry, renewed every third of `lease_timeout`);
//! - outbox entries are claimed with `FOR UPDATE SKIP LOCKED` and a hold
//!   time, so each mail goes out once (an instance killed between sending
//!   and dequeuing leaves that one mail to be sent again after the hold).
//!
//! Group commit: mail transactions commit without waiting for the WAL
//! (`synchronous_commit = off`); [`Store::flush`] commits one synchronous
//! transaction, which makes every earlier commit durable, and sources mark
//! mail processed only after it, as with sled.

use super::blobs::key_of;
use super::{
    Change, Count, HookEntry, IdEntry, Lane, MAX_PAGE, Op, OutboxEntry, OutboxKey, Page, PgSettings, Position,
    QuarantineEntry, ReportRead, ReportTicket, Store, StoreError, TicketFilter, Timer,
};
use crate::core::model::{Event, MessageRecord, Status, Ticket, TicketId};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use jiff::Timestamp;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::types::{Json, ToSql};

mod embedded {
    refinery::embed_migrations!("src/adapters/store/migrations");
}

/// Blobs younger than this are never swept (mail being processed names them soon).
const SWEEP_GRACE_SECS: i64 = 3600;

/// The PostgreSQL store.
pub struct PgStore {
    rt: &'static tokio::runtime::Runtime,
    pool: Pool,
    /// This process's name in lease rows.
    holder: String,
    lease_timeout: Duration,
    /// Nonces drawn from the sequence and not yet used.
    spare_seqs: std::sync::Mutex<Vec<u64>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

/// An error with its causes ("error performing TLS handshake: invalid peer certificate: UnknownIssuer").
fn db(e: impl std::error::Error) -> StoreError {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    StoreError::Database(text)
}

/// A database error, with unique-key and serialisation failures as conflicts.
fn pg(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::T_R_SERIALIZATION_FAILURE => {
            StoreError::Conflict(
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string()),
            )
        }
        _ => match e.as_db_error() {
            Some(d) => StoreError::Database(d.message().to_string()),
            None => db(e),
        },
    }
}

fn status_code(s: Status) -> i16 {
    i16::from(super::status_number(s))
}

fn status_of_code(c: i16) -> Option<Status> {
    u8::try_from(c).ok().and_then(super::status_of_number)
}

fn lane_code(l: Lane) -> i16 {
    l as i16
}

fn lane_of_code(c: i16) -> Lane {
    if c == 0 { Lane::Live } else { Lane::Bulk }
}

fn secs(at: Timestamp) -> i64 {
    at.as_second()
}

fn at_secs(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A unique holder name: host, process and a random part.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mut random = [0u8; 6];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}:{}:{hex}", host.trim(), std::process::id())
}

/// TLS trusting only the CA in `ca_file` (a database's own CA, as a rule).
fn tls_connector(ca_file: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| StoreError::Database(format!("[store] ca_file {}: {e}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(&e))? {
        roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

impl PgStore {
    /// Connects, creates or upgrades the schema (under an advisory lock, so
    /// instances starting together migrate once) and returns the store.
    pub fn open(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = match &settings.url {
            Some(url) => url.parse().map_err(db)?,
            None => {
                let mut c = tokio_postgres::Config::new();
                c.host(&settings.host)
                    .port(settings.port)
                    .dbname(&settings.database)
                    .user(&settings.user);
                c
            }
        };
        if let Some(source) = &settings.password {
            let secret = source.load().map_err(StoreError::Database)?;
            config.password(secret.expose());
        }
        // Commits do not wait for the WAL; flush() does (group commit).
        config
            .options("-c synchronous_commit=off")
            .application_name("postdesk")
            .connect_timeout(Duration::from_secs(5))
            .keepalives_idle(Duration::from_secs(30));
        // One runtime for the process's database I/O, never dropped (a
        // runtime may not be dropped inside another's tasks).
        let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(db)?,
        ));
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &settings.ca_file {
            Some(ca) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Manager::from_config(config, tls_connector(ca)?, manager_config)
            }
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
        let pool = {
            let _enter = rt.enter();
            Pool::builder(manager)
                .max_size(settings.pool_size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(5)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(db)?
        };
        let store = PgStore {
            rt,
            pool,
            holder: holder_name(),
            lease_timeout: settings.lease_timeout,
            spare_seqs: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Runs a database future on the store's runtime, driven by this thread.
    fn run<T, Fut>(&self, f: impl FnOnce(Pool) -> Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let fut = f(self.pool.clone());
        let rt = self.rt;
        // The caller's thread drives the query and the connection itself (a
        // current-thread runtime): no hop to another thread and back.
        match tokio::runtime::Handle::try_current() {
            Err(_) => rt.block_on(fut),
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| rt.block_on(fut))
            }
            // A current-thread runtime's task may not block: a plain thread waits instead.
            Ok(_) => std::thread::spawn(move || rt.block_on(fut))
                .join()
                .unwrap_or_else(|_| Err(StoreError::Database("the database call panicked".into()))),
        }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.run(|pool| async move {
            let mut c = pool.get().await.map_err(db)?;
            c.batch_execute("SELECT pg_advisory_lock(7361290)").await.map_err(pg)?;
            let client: &mut tokio_postgres::Client = &mut c;
            let result = embedded::migrations::runner().run_async(client).await;
            c.batch_execute("SELECT pg_advisory_unlock(7361290)")
                .await
                .map_err(pg)?;
            let report = result.map_err(|e| StoreError::Database(format!("schema migration failed: {e}")))?;
            for m in report.applied_migrations() {
                tracing::info!(version = m.version(), name = %m.name(), "database schema migrated");
            }
            Ok(())
        })
    }

    /// A one-row query's first column.
    fn one<T>(&self, sql: &'static str, params: Params) -> Result<Option<T>, StoreError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a> + Send + 'static,
    {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(db)?;
            let st = c.prepare_cached(sql).await.map_err(pg)?;
            let row = c.query_opt(&st, &refs(&params)).await.map_err(pg)?;
            row.map(|r| r.try_get::<_, T>(0).map_err(pg)).transpose()
        })
    }

    /// Every row's first column.
    fn column<T>(&self, sql: &'static str, params: Params) -> Result<Vec<T>, StoreError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a> + Send + 'static,
    {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(db)?;
            let st = c.prepare_cached(sql).await.map_err(pg)?;
            let rows = c.query(&st, &refs(&params)).await.map_err(pg)?;
            rows.iter().map(|r| r.try_get::<_, T>(0).map_err(pg)).collect()
        })
    }

    /// Every row, mapped.
    fn rows<T: Send + 'static>(
        &self,
        sql: String,
        params: Params,
        f: fn(&tokio_postgres::Row) -> Result<T, tokio_postgres::Error>,
    ) -> Result<Vec<T>, StoreError> {
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(db)?;
            let st = c.prepare_cached(&sql).await.map_err(pg)?;
            let rows = c.query(&st, &refs(&params)).await.map_err(pg)?;
            rows.iter().map(|r| f(r).map_err(pg)).collect()
        })
    }
}

/// One statement of a commit.
struct Statement {
    sql: std::borrow::Cow<'static, str>,
    params: Params,
}

fn st(sql: &'static str, params: Params) -> Statement {
    Statement {
        sql: sql.into(),
        params,
    }
}

/// A write that must touch a row, else the whole commit fails as a
/// conflict: raised by the server, so a pipelined commit cannot go through.
fn checked(dml: &'static str, mut params: Params, conflict: String) -> Statement {
    params.push(Box::new(conflict));
    Statement {
        sql: format!(
            "WITH w AS ({dml} RETURNING 1) SELECT postdesk_conflict(${}) WHERE NOT EXISTS (SELECT 1 FROM w)",
            params.len()
        )
        .into(),
        params,
    }
}

/// The statement of one write. `written`: tickets this commit wrote already, with their new revision.
fn statement(op: Op, written: &mut HashMap<i64, i64>) -> Statement {
    macro_rules! p {
        ($($v:expr),* $(,)?) => { vec![$(Box::new($v) as Box<dyn ToSql + Sync + Send>),*] };
    }
    match op {
        Op::Ticket(t) => {
            // Optimistic: a write names the revision it was made from; another
            // instance's write in between makes this one a conflict, retried.
            let id = t.id.0 as i64;
            let from = written.get(&id).copied().unwrap_or(t.revision as i64);
            written.insert(id, from + 1);
            let params = p![
                id,
                status_code(t.status),
                t.queue.clone(),
                t.assignee.clone(),
                t.requester.email.to_ascii_lowercase(),
                secs(t.updated_at),
                t.is_active(),
                Json(t.clone()),
            ];
            if from == 0 {
                checked(
                    "INSERT INTO tickets (id, status, queue, assignee, requester, updated, active, data) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                    params,
                    format!("ticket {} was opened meanwhile", t.id),
                )
            } else {
                let mut params = params;
                params.push(Box::new(from));
                checked(
                    "UPDATE tickets SET status = $2, queue = $3, assignee = $4, requester = $5, updated = $6, \
                     active = $7, data = $8, version = version + 1 WHERE id = $1 AND version = $9",
                    params,
                    format!("ticket {} was changed meanwhile", t.id),
                )
            }
        }
        Op::Message(id, m) => st(
            "INSERT INTO messages (ticket, blob, data) VALUES ($1, $2, $3)",
            p![id.0 as i64, m.raw_key.clone(), Json(m)],
        ),
        Op::Event(id, e) => st(
            "INSERT INTO events (ticket, at, data) VALUES ($1, $2, $3)",
            p![id.0 as i64, secs(e.at), Json(e)],
        ),
        // A stored id is taken once; only a reference may be upgraded.
        Op::MessageId(mid, entry) if entry.stored => checked(
            "INSERT INTO msgids (id, ticket, stored, hash) VALUES ($1, $2, true, $3) \
             ON CONFLICT (id) DO UPDATE SET ticket = EXCLUDED.ticket, stored = true, hash = EXCLUDED.hash \
             WHERE NOT msgids.stored",
            p![mid.clone(), entry.ticket.0 as i64, entry.hash],
            format!("Message-ID <{mid}> was stored meanwhile"),
        ),
        Op::MessageId(mid, entry) => st(
            "INSERT INTO msgids (id, ticket, stored, hash) VALUES ($1, $2, false, NULL) ON CONFLICT (id) DO NOTHING",
            p![mid, entry.ticket.0 as i64],
        ),
        Op::Hash(h) => st(
            "INSERT INTO hashes (hash) VALUES ($1) ON CONFLICT (hash) DO NOTHING",
            p![h],
        ),
        Op::Source(key, blob) => st("INSERT INTO sources (key, blob) VALUES ($1, $2)", p![key, blob]),
        Op::Position(mailbox, pos) => st(
            "INSERT INTO positions (mailbox, uid_validity, last_uid, taking_over) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (mailbox) DO UPDATE SET uid_validity = EXCLUDED.uid_validity, last_uid = EXCLUDED.last_uid, \
             taking_over = EXCLUDED.taking_over",
            p![
                mailbox,
                i64::from(pos.uid_validity),
                i64::from(pos.last_uid),
                pos.taking_over
            ],
        ),
        Op::Enqueue(lane, e) => st(
            "INSERT INTO outbox (lane, entry) VALUES ($1, $2)",
            p![lane_code(lane), Json(e)],
        ),
        Op::Requeue(k, e) => st(
            "UPDATE outbox SET entry = $3, claimed_by = NULL, claimed_until = NULL WHERE lane = $1 AND seq = $2",
            p![lane_code(k.lane), k.seq as i64, Json(e)],
        ),
        Op::Dequeue(k) => st(
            "DELETE FROM outbox WHERE lane = $1 AND seq = $2",
            p![lane_code(k.lane), k.seq as i64],
        ),
        Op::Hook(h) => st("INSERT INTO hooks (entry) VALUES ($1)", p![Json(h)]),
        Op::HookUpdate(seq, h) => st("UPDATE hooks SET entry = $2 WHERE seq = $1", p![seq as i64, Json(h)]),
        Op::HookDone(seq) => st("DELETE FROM hooks WHERE seq = $1", p![seq as i64]),
        Op::Quarantine(q) => st(
            "INSERT INTO quarantine (blob, data) VALUES ($1, $2)",
            p![q.raw_key.clone(), Json(q)],
        ),
        Op::Ack(address, at) => st("INSERT INTO acks (address, at) VALUES ($1, $2)", p![address, secs(at)]),
        Op::Suppress(address, until) => st(
            "INSERT INTO suppress (address, until) VALUES ($1, $2) ON CONFLICT (address) DO UPDATE SET until = EXCLUDED.until",
            p![address, secs(until)],
        ),
        // Compare and set: numbers only move forward, and two instances
        // opening a ticket at once cannot both take the same one.
        Op::NextTicket(id) => checked(
            "UPDATE meta SET value = $1::bigint::text WHERE key = 'next_ticket' AND value::bigint < $1",
            p![id.0 as i64],
            format!("ticket number {} was taken meanwhile", id.0.saturating_sub(1)),
        ),
        Op::RoundRobin(queue, agent) => st(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            p![format!("rr:{queue}"), agent],
        ),
        Op::AddTimer(t) => st(
            "INSERT INTO timers (at, ticket, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            p![secs(t.at), t.ticket.0 as i64, i16::from(t.kind)],
        ),
        Op::RemoveTimer(t) => st(
            "DELETE FROM timers WHERE at = $1 AND ticket = $2 AND kind = $3",
            p![secs(t.at), t.ticket.0 as i64, i16::from(t.kind)],
        ),
    }
}

/// Runs a commit in one round trip: its statements prepared (once per
/// connection), then BEGIN, every statement and COMMIT sent together
/// (tokio-postgres pipelines them in the order first polled). A failed
/// statement aborts the transaction, and the COMMIT after it rolls back.
async fn commit_all(c: &deadpool_postgres::Client, statements: &[Statement]) -> Result<(), StoreError> {
    let mut sqls: Vec<&str> = statements.iter().map(|s| s.sql.as_ref()).collect();
    sqls.sort_unstable();
    sqls.dedup();
    let prepared = futures::future::try_join_all(sqls.iter().map(|sql| c.prepare_cached(sql)))
        .await
        .map_err(pg)?;
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = statements.iter().map(|s| refs(&s.params)).collect();
    type Step<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>>;
    let mut steps: Vec<Step<'_>> = Vec::with_capacity(statements.len() + 2);
    steps.push(Box::pin(c.batch_execute("BEGIN")));
    for (s, p) in statements.iter().zip(&params) {
        let i = sqls.binary_search(&s.sql.as_ref()).expect("prepared above");
        let run = c.execute(&prepared[i], p.as_slice());
        steps.push(Box::pin(async move { run.await.map(|_| ()) }));
    }
    steps.push(Box::pin(c.batch_execute("COMMIT")));
    // Polled in order, every time, so the requests go out in order; every
    // answer is awaited (the first error wins), so the connection goes back
    // to the pool outside any transaction.
    let mut results: Vec<Option<Result<(), tokio_postgres::Error>>> = steps.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (step, result) in steps.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match step.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => *result = Some(r),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    match results.into_iter().flatten().find_map(Result::err) {
        Some(e) => Err(pg(e)),
        None => Ok(()),
    }
}

fn ticket_row(r: &tokio_postgres::Row) -> Result<Ticket, tokio_postgres::Error> {
    let mut t = r.try_get::<_, Json<Ticket>>(0)?.0;
    t.revision = r.try_get::<_, i64>(1)? as u64;
    Ok(t)
}

fn outbox_row(r: &tokio_postgres::Row) -> Result<(OutboxKey, OutboxEntry), tokio_postgres::Error> {
    let lane: i16 = r.try_get(0)?;
    let seq: i64 = r.try_get(1)?;
    let entry: Json<OutboxEntry> = r.try_get(2)?;
    Ok((
        OutboxKey {
            lane: lane_of_code(lane),
            seq: seq as u64,
        },
        entry.0,
    ))
}

impl Store for PgStore {
    fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        Ok(self
            .rows(
                "SELECT data, version FROM tickets WHERE id = $1".into(),
                vec![Box::new(id.0 as i64)],
                ticket_row,
            )?
            .pop())
    }

    fn next_ticket_id(&self) -> Result<TicketId, StoreError> {
        let v = self.one::<String>("SELECT value FROM meta WHERE key = 'next_ticket'", vec![])?;
        Ok(TicketId(v.and_then(|v| v.parse().ok()).unwrap_or(1)))
    }

    fn list(&self, filter: &TicketFilter, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let bad = |c: &str| StoreError::BadCursor(c.to_string());
        let by_update = filter.updated_since.is_some()
            && filter.status.is_none()
            && filter.queue.is_none()
            && filter.assignee.is_none()
            && filter.requester.is_none();
        let mut sql = String::from("SELECT data, version FROM tickets WHERE true");
        let mut params: Params = Vec::new();
        let cond = |sql: &mut String, params: &mut Params, clause: &str, p: Box<dyn ToSql + Sync + Send>| {
            params.push(p);
            sql.push_str(&clause.replace('?', &format!("${}", params.len())));
        };
        if let Some(s) = filter.status {
            cond(&mut sql, &mut params, " AND status = ?", Box::new(status_code(s)));
        }
        if let Some(q) = &filter.queue {
            cond(&mut sql, &mut params, " AND queue = ?", Box::new(q.clone()));
        }
        if let Some(a) = &filter.assignee {
            cond(&mut sql, &mut params, " AND assignee = ?", Box::new(a.clone()));
        }
        if let Some(r) = &filter.requester {
            cond(
                &mut sql,
                &mut params,
                " AND requester = ?",
                Box::new(r.to_ascii_lowercase()),
            );
        }
        if let Some(u) = filter.updated_since {
            cond(&mut sql, &mut params, " AND updated >= ?", Box::new(secs(u)));
        }
        match cursor {
            None => {}
            Some(c) if by_update => {
                let (s, id) = c.split_once('.').ok_or_else(|| bad(c))?;
                let s: i64 = s.parse().map_err(|_| bad(c))?;
                let id: i64 = id.parse().map_err(|_| bad(c))?;
                cond(&mut sql, &mut params, " AND (updated, id) > (?", Box::new(s));
                cond(&mut sql, &mut params, ", ?)", Box::new(id));
            }
            Some(c) => {
                let id: i64 = c.parse().map_err(|_| bad(c))?;
                cond(&mut sql, &mut params, " AND id > ?", Box::new(id));
            }
        }
        sql.push_str(if by_update {
            " ORDER BY updated, id"
        } else {
            " ORDER BY id"
        });
        sql.push_str(&format!(" LIMIT {}", limit + 1));
        let mut tickets = self.rows(sql, params, ticket_row)?;
        let mut page = Page::default();
        if tickets.len() > limit {
            tickets.truncate(limit);
            let t = tickets.last().expect("a full page");
            page.next = Some(if by_update {
                format!("{}.{}", t.updated_at.as_second(), t.id)
            } else {
                t.id.to_string()
            });
        }
        page.tickets = tickets;
        Ok(page)
    }

    fn counts(&self) -> Result<Vec<Count>, StoreError> {
        let rows = self.rows(
            "SELECT status, queue, tickets FROM ticket_counts WHERE tickets > 0 ORDER BY status, queue".into(),
            vec![],
            |r| {
                Ok((
                    r.try_get::<_, i16>(0)?,
                    r.try_get::<_, String>(1)?,
                    r.try_get::<_, i64>(2)?,
                ))
            },
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, queue, n)| {
                status_of_code(s).map(|status| Count {
                    status,
                    queue,
                    tickets: n as u64,
                })
            })
            .collect())
    }

    fn report_tickets(&self, since: Option<Timestamp>, _until: Timestamp) -> Result<Vec<ReportTicket>, StoreError> {
        let ids = |rows: Vec<i64>| rows.into_iter().map(|i| i as u64).collect::<Vec<u64>>();
        Ok(match since {
            Some(s) => super::report_set(
                ids(self.column(
                    "SELECT DISTINCT ticket FROM events WHERE at >= $1",
                    vec![Box::new(s.as_second().div_euclid(86_400) * 86_400)],
                )?),
                ids(self.column("SELECT id FROM tickets WHERE active", vec![])?),
            ),
            None => super::report_set(ids(self.column("SELECT id FROM tickets", vec![])?), Vec::new()),
        })
    }

    fn report_reads(
        &self,
        tickets: &[ReportTicket],
        wanted: &dyn Fn(&crate::core::report::Facts) -> bool,
    ) -> Result<Vec<ReportRead>, StoreError> {
        // Two queries a batch, not two a ticket: a report reads tens of
        // thousands of them.
        let ids: Vec<i64> = tickets.iter().map(|t| t.id.0 as i64).collect();
        let mut facts: HashMap<i64, crate::core::report::Facts> = self
            .rows(
                "SELECT id, data FROM tickets WHERE id = ANY($1)".into(),
                vec![Box::new(ids)],
                |r| Ok((r.try_get(0)?, r.try_get::<_, Json<crate::core::report::Facts>>(1)?.0)),
            )?
            .into_iter()
            .collect();
        let kept: Vec<(&ReportTicket, crate::core::report::Facts)> = tickets
            .iter()
            .filter_map(|t| facts.remove(&(t.id.0 as i64)).map(|f| (t, f)))
            .filter(|(_, f)| wanted(f))
            .collect();
        let replayed: Vec<i64> = kept
            .iter()
            .filter(|(t, _)| !t.quiet)
            .map(|(t, _)| t.id.0 as i64)
            .collect();
        let mut events: HashMap<i64, Vec<Event>> = HashMap::new();
        if !replayed.is_empty() {
            for (ticket, e) in self.rows(
                "SELECT ticket, data FROM events WHERE ticket = ANY($1) ORDER BY ticket, seq".into(),
                vec![Box::new(replayed)],
                |r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, Json<Event>>(1)?.0)),
            )? {
                events.entry(ticket).or_default().push(e);
            }
        }
        Ok(kept
            .into_iter()
            .map(|(t, facts)| ReportRead {
                events: (!t.quiet).then(|| events.remove(&(t.id.0 as i64)).unwrap_or_default()),
                facts,
            })
            .collect())
    }

    fn messages(&self, id: TicketId) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(self
            .column::<Json<MessageRecord>>(
                "SELECT data FROM messages WHERE ticket = $1 ORDER BY seq",
                vec![Box::new(id.0 as i64)],
            )?
            .into_iter()
            .map(|j| j.0)
            .collect())
    }

    fn events(&self, id: TicketId) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .column::<Json<Event>>(
                "SELECT data FROM events WHERE ticket = $1 ORDER BY seq",
                vec![Box::new(id.0 as i64)],
            )?
            .into_iter()
            .map(|j| j.0)
            .collect())
    }

    fn message_id(&self, id: &str) -> Result<Option<IdEntry>, StoreError> {
        Ok(self
            .rows(
                "SELECT ticket, stored, hash FROM msgids WHERE id = $1".into(),
                vec![Box::new(id.to_string())],
                |r| {
                    Ok(IdEntry {
                        ticket: TicketId(r.try_get::<_, i64>(0)? as u64),
                        stored: r.try_get(1)?,
                        hash: r.try_get(2)?,
                    })
                },
            )?
            .pop())
    }

    fn message_ids(&self, ids: &[String]) -> Result<HashMap<String, IdEntry>, StoreError> {
        Ok(self
            .rows(
                "SELECT id, ticket, stored, hash FROM msgids WHERE id = ANY($1)".into(),
                vec![Box::new(ids.to_vec())],
                |r| {
                    Ok((
                        r.try_get::<_, String>(0)?,
                        IdEntry {
                            ticket: TicketId(r.try_get::<_, i64>(1)? as u64),
                            stored: r.try_get(2)?,
                            hash: r.try_get(3)?,
                        },
                    ))
                },
            )?
            .into_iter()
            .collect())
    }

    fn known_sources(&self, keys: &[String]) -> Result<std::collections::HashSet<String>, StoreError> {
        if keys.is_empty() {
            return Ok(Default::default());
        }
        Ok(self
            .column::<String>(
                "SELECT key FROM sources WHERE key = ANY($1)",
                vec![Box::new(keys.to_vec())],
            )?
            .into_iter()
            .collect())
    }

    fn remote(&self) -> bool {
        true
    }

    fn has_hash(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .one::<i32>("SELECT 1 FROM hashes WHERE hash = $1", vec![Box::new(hash.to_string())])?
            .is_some())
    }

    fn has_source(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .one::<i32>("SELECT 1 FROM sources WHERE key = $1", vec![Box::new(key.to_string())])?
            .is_some())
    }

    fn has_source_prefix(&self, prefix: &str) -> Result<bool, StoreError> {
        // Asked once per source at a start: a scan is fine.
        Ok(self
            .one::<i32>(
                "SELECT 1 FROM sources WHERE starts_with(key, $1) LIMIT 1",
                vec![Box::new(prefix.to_string())],
            )?
            .is_some())
    }

    fn position(&self, mailbox: &str) -> Result<Option<Position>, StoreError> {
        Ok(self
            .rows(
                "SELECT uid_validity, last_uid, taking_over FROM positions WHERE mailbox = $1".into(),
                vec![Box::new(mailbox.to_string())],
                |r| {
                    Ok(Position {
                        uid_validity: r.try_get::<_, i64>(0)? as u32,
                        last_uid: r.try_get::<_, i64>(1)? as u32,
                        taking_over: r.try_get(2)?,
                    })
                },
            )?
            .pop())
    }

    fn acks_since(&self, address: &str, since: Timestamp) -> Result<u32, StoreError> {
        let n = self.one::<i64>(
            "SELECT count(*) FROM acks WHERE address = $1 AND at >= $2",
            vec![Box::new(address.to_string()), Box::new(secs(since))],
        )?;
        Ok(n.unwrap_or(0) as u32)
    }

    fn suppressed_until(&self, address: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .one::<i64>(
                "SELECT until FROM suppress WHERE address = $1",
                vec![Box::new(address.to_string())],
            )?
            .map(at_secs))
    }

    fn loads(&self) -> Result<HashMap<String, u32>, StoreError> {
        Ok(self
            .rows(
                "SELECT agent, tickets FROM agent_loads WHERE tickets > 0".into(),
                vec![],
                |r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?)),
            )?
            .into_iter()
            .map(|(a, n)| (a, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect())
    }

    fn round_robin(&self, queue: &str) -> Result<Option<String>, StoreError> {
        self.one::<String>(
            "SELECT value FROM meta WHERE key = $1",
            vec![Box::new(format!("rr:{queue}"))],
        )
    }

    fn due_until(&self, now: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        self.rows(
            format!("SELECT at, ticket, kind FROM timers WHERE at <= $1 ORDER BY at, ticket, kind LIMIT {limit}"),
            vec![Box::new(secs(now))],
            |r| {
                Ok(Timer {
                    at: at_secs(r.try_get(0)?),
                    ticket: TicketId(r.try_get::<_, i64>(1)? as u64),
                    kind: r.try_get::<_, i16>(2)? as u8,
                })
            },
        )
    }

    fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .one::<Option<i64>>("SELECT min(at) FROM timers", vec![])?
            .flatten()
            .map(at_secs))
    }

    fn outbox(
        &self,
        lane: Lane,
        after: Option<OutboxKey>,
        limit: usize,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        let after = after.map_or(-1, |k| k.seq as i64);
        self.rows(
            format!("SELECT lane, seq, entry FROM outbox WHERE lane = $1 AND seq > $2 ORDER BY seq LIMIT {limit}"),
            vec![Box::new(lane_code(lane)), Box::new(after)],
            outbox_row,
        )
    }

    fn claim_outbox(
        &self,
        lane: Lane,
        after: Option<OutboxKey>,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>, StoreError> {
        let after = after.map_or(-1, |k| k.seq as i64);
        let mut rows = self.rows(
            format!(
                "UPDATE outbox SET claimed_by = $4, claimed_until = extract(epoch FROM now())::bigint + $3 \
                 WHERE (lane, seq) IN (SELECT lane, seq FROM outbox WHERE lane = $1 AND seq > $2 \
                   AND (claimed_until IS NULL OR claimed_until < extract(epoch FROM now())::bigint OR claimed_by = $4) \
                   ORDER BY seq LIMIT {limit} FOR UPDATE SKIP LOCKED) \
                 RETURNING lane, seq, entry"
            ),
            vec![
                Box::new(lane_code(lane)),
                Box::new(after),
                Box::new(hold.as_secs() as i64),
                Box::new(self.holder.clone()),
            ],
            outbox_row,
        )?;
        rows.sort_by_key(|(k, _)| k.seq);
        Ok(rows)
    }

    fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self.one::<i64>("SELECT count(*) FROM outbox", vec![])?.unwrap_or(0) as u64)
    }

    fn quarantine(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        Ok(self
            .column::<Json<QuarantineEntry>>("SELECT data FROM quarantine ORDER BY seq", vec![])?
            .into_iter()
            .map(|j| j.0)
            .collect())
    }

    fn hooks(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, HookEntry)>, StoreError> {
        self.rows(
            "SELECT seq, entry FROM hooks WHERE seq > $1 ORDER BY seq LIMIT $2".into(),
            vec![
                Box::new(after.map_or(-1, |a| a as i64)),
                Box::new(limit.min(10_000) as i64),
            ],
            |r| {
                let seq: i64 = r.try_get(0)?;
                let entry: Json<HookEntry> = r.try_get(1)?;
                Ok((seq as u64, entry.0))
            },
        )
    }

    fn put_blobs(&self, blobs: &[&[u8]]) -> Result<Vec<String>, StoreError> {
        let keys: Vec<String> = blobs.iter().map(|b| key_of(b)).collect();
        if blobs.is_empty() {
            return Ok(keys);
        }
        let owned_keys = keys.clone();
        let owned: Vec<Vec<u8>> = blobs.iter().map(|b| b.to_vec()).collect();
        self.run(move |pool| async move {
            let mut c = pool.get().await.map_err(db)?;
            // One statement for the batch; its synchronous commit makes the
            // blobs durable before any record names them.
            let tx = c.transaction().await.map_err(pg)?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")
                .await
                .map_err(pg)?;
            let st = tx
                .prepare_cached(
                    "INSERT INTO blobs (key, data, created) \
                     SELECT k, d, extract(epoch FROM now())::bigint FROM unnest($1::text[], $2::bytea[]) AS b(k, d) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .await
                .map_err(pg)?;
            tx.execute(&st, &[&owned_keys, &owned]).await.map_err(pg)?;
            tx.commit().await.map_err(pg)
        })?;
        Ok(keys)
    }

    fn blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.one::<Vec<u8>>("SELECT data FROM blobs WHERE key = $1", vec![Box::new(key.to_string())])
    }

    fn sweep_blobs(&self) -> Result<u64, StoreError> {
        self.run(|pool| async move {
            let c = pool.get().await.map_err(db)?;
            let n = c
                .execute(
                    "DELETE FROM blobs b WHERE b.created < extract(epoch FROM now())::bigint - $1 \
                     AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = b.key) \
                     AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.blob = b.key)",
                    &[&SWEEP_GRACE_SECS],
                )
                .await
                .map_err(pg)?;
            Ok(n)
        })
    }

    fn prune_acks(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.run(|pool| async move {
            let c = pool.get().await.map_err(db)?;
            c.execute("DELETE FROM acks WHERE at < $1", &[&secs(before)])
                .await
                .map_err(pg)
        })
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        // Numbers drawn 64 at a time: unique across instances, one round trip per 64.
        let mut spare = self.spare_seqs.lock().unwrap_or_else(|p| p.into_inner());
        if spare.is_empty() {
            let block = self.column::<i64>("SELECT nextval('nonces') FROM generate_series(1, 64)", vec![])?;
            spare.extend(block.into_iter().rev().map(|n| n as u64));
        }
        spare
            .pop()
            .ok_or_else(|| StoreError::Database("the nonce sequence gave nothing".into()))
    }

    fn commit(&self, change: Change) -> Result<(), StoreError> {
        if change.is_empty() {
            return Ok(());
        }
        let mut written = HashMap::new();
        let statements: Vec<Statement> = change.ops.into_iter().map(|op| statement(op, &mut written)).collect();
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(db)?;
            // Asynchronous commit (the connection's setting): flush() makes it durable.
            commit_all(&c, &statements).await
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // A synchronous commit that writes: it returns once the WAL holds it
        // and so every transaction committed before it.
        self.run(|pool| async move {
            let c = pool.get().await.map_err(db)?;
            c.batch_execute(
                "BEGIN; SET LOCAL synchronous_commit = on; \
                 INSERT INTO meta (key, value) VALUES ('flushes', '1') \
                 ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text; COMMIT",
            )
            .await
            .map_err(pg)
        })
    }

    fn lease(&self, name: &str) -> Result<bool, StoreError> {
        let held = self.one::<String>(
            "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, extract(epoch FROM now())::bigint + $3) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires < extract(epoch FROM now())::bigint \
             RETURNING holder",
            vec![
                Box::new(name.to_string()),
                Box::new(self.holder.clone()),
                Box::new(self.lease_timeout.as_secs() as i64),
            ],
        )?;
        Ok(held.is_some())
    }

    fn release(&self, name: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), self.holder.clone());
        self.run(move |pool| async move {
            let c = pool.get().await.map_err(db)?;
            c.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", &[&name, &holder])
                .await
                .map_err(pg)?;
            Ok(())
        })
    }

    fn lease_interval(&self) -> Option<Duration> {
        Some(self.lease_timeout / 3)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.run(|pool| async move {
            let c = pool.get().await.map_err(db)?;
            c.batch_execute("SELECT 1").await.map_err(pg)
        })
    }
}
