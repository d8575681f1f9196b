//! `postdesk run`: one task per mailbox, the timers, the outbox sender and the
//! HTTP API; SIGHUP reloads the config (fully validated, else the running one
//! stays); SIGTERM/SIGINT stop at safe points (after the current mail), flush
//! last. sd_notify tells systemd READY, RELOADING, STOPPING and feeds its watchdog.

use crate::adapters::config::{Config, SourceConfig};
use crate::notify::notify;
use crate::pipeline::Pipeline;
use crate::transports::Sink;
use crate::transports::smtp::{Mailer, drain_with};
use jiff::Timestamp;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Installs SIGTERM and SIGINT handlers now (inside a runtime) and returns a
/// future that resolves when either arrives.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                    _ = int.recv() => tracing::info!("SIGINT: stopping"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for signals; stopping only when killed");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The running mailbox tasks, by name, with their stop switch and the config they run.
struct Mailboxes {
    running: HashMap<String, (watch::Sender<bool>, String)>,
}

impl Mailboxes {
    fn start(&mut self, tasks: &mut JoinSet<()>, sink: &Sink, config: &Config) {
        for m in &config.mailboxes {
            let fingerprint = format!("{m:?}");
            if let Some((stop, old)) = self.running.get(&m.name) {
                if *old == fingerprint {
                    continue;
                }
                tracing::info!(mailbox = %m.name, "mailbox changed: restarting it");
                let _ = stop.send(true);
            }
            let (tx, rx) = watch::channel(false);
            let sink = sink.clone();
            let name = m.name.clone();
            match &m.source {
                SourceConfig::Imap(imap) => {
                    tasks.spawn(crate::transports::imap::run(sink, name, imap.clone(), rx));
                }
                SourceConfig::Maildir { path } => {
                    tasks.spawn(crate::transports::maildir::run(sink, name, path.clone(), rx));
                }
            }
            self.running.insert(m.name.clone(), (tx, fingerprint));
        }
        let wanted: Vec<&String> = config.mailboxes.iter().map(|m| &m.name).collect();
        self.running.retain(|name, (stop, _)| {
            let keep = wanted.contains(&name);
            if !keep {
                tracing::info!(mailbox = %name, "mailbox removed: stopping it");
                let _ = stop.send(true);
            }
            keep
        });
    }

    fn stop_all(&self) {
        for (stop, _) in self.running.values() {
            let _ = stop.send(true);
        }
    }
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(pipeline: Pipeline, config_path: PathBuf, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = pipeline.config.clone();
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for the HTTP API: {e}", config.http.listen))?;
    let token = match &config.http.token {
        Some(source) => Some(
            source
                .load()
                .map_err(|e| anyhow::anyhow!("[http] token: {e}; refusing to serve the API without it"))?,
        ),
        None => None,
    };
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let current = Arc::new(RwLock::new(pipeline.clone()));
    let sink = Sink {
        current: current.clone(),
        writer: Arc::new(Mutex::new(())),
        wake_sender: Arc::new(Notify::new()),
    };
    tracing::info!(config = %config_path.display(), mailboxes = config.mailboxes.len(), http = %config.http.listen, "postdesk running");
    let mut tasks = JoinSet::new();
    let search_dir = config.instance.data_dir.join("search");
    let search = match crate::adapters::search::SearchIndex::open(&search_dir) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::error!(error = %e, "no full-text search: the team's ticket search reads subjects and requesters only");
            None
        }
    };
    tasks.spawn(crate::transports::http::serve(
        listener,
        Arc::new(crate::transports::http::Api {
            current: current.clone(),
            token,
            writer: sink.writer.clone(),
            wake_sender: sink.wake_sender.clone(),
            bodies: tokio::sync::Semaphore::new(crate::transports::http::MAX_BODIES),
            search: search.clone(),
        }),
        stop_rx.clone(),
    ));
    let mut mailboxes = Mailboxes {
        running: HashMap::new(),
    };
    mailboxes.start(&mut tasks, &sink, &config);
    tasks.spawn(timers(sink.clone(), stop_rx.clone()));
    tasks.spawn(sender(sink.clone(), stop_rx.clone()));
    tasks.spawn(readiness(sink.clone(), stop_rx.clone()));
    tasks.spawn(sweeper(sink.clone(), stop_rx.clone()));
    tasks.spawn(crate::transports::webhook::run(sink.clone(), stop_rx.clone()));
    if let Some(search) = search {
        tasks.spawn(indexer(sink.clone(), search, stop_rx.clone()));
    }
    let retrain_now = Arc::new(Notify::new());
    tasks.spawn(retrainer(sink.clone(), retrain_now.clone(), stop_rx.clone()));

    let mut shutdown = std::pin::pin!(shutdown);
    let mut store_check = tokio::time::interval(STORE_CHECK);
    let mut failed = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = store_check.tick() => {
                if let Some(e) = sink.pipeline().store.failed() {
                    tracing::error!(error = %e, "a write to the store failed and it writes no more (a full disk?): stopping, so that a restart opens it again from what is on disk");
                    failed = Some(e);
                    break;
                }
            }
            _ = hangup.recv() => {
                notify("RELOADING=1\nSTATUS=reloading the config");
                match reload(&config_path, &sink) {
                    Ok(new) => {
                        mailboxes.start(&mut tasks, &sink, &new);
                        if new.intent.retrain.is_some() {
                            retrain_now.notify_one();
                        }
                        tracing::info!(config = %config_path.display(), rules = new.rules.len(), mailboxes = new.mailboxes.len(), "config reloaded");
                        notify("READY=1\nSTATUS=config reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "config reload failed; keeping the running config");
                        notify("READY=1\nSTATUS=config reload failed; running the previous config");
                    }
                }
            }
        }
    }
    notify("STOPPING=1\nSTATUS=stopping");
    // A backup being copied (writes wait on it) gives up, not the stop.
    sink.pipeline().store.stop();
    let _ = stop_tx.send(true);
    mailboxes.stop_all();
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                tracing::warn!("tasks did not stop within 20 s; aborting them");
                tasks.abort_all();
                break;
            }
        }
    }
    if let Some(e) = failed {
        // What the store still holds in memory cannot reach the disk: the
        // sources keep every mail not made durable, and the restart reads them again.
        notify("STATUS=stopped: the store failed");
        return Err(StoreFailed(e).into());
    }
    sink.pipeline().store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// How often the daemon looks whether its store failed ([`crate::adapters::store::Store::failed`]).
const STORE_CHECK: Duration = Duration::from_millis(500);

/// The daemon stopped because a write to its store failed for good (until
/// the store is opened again); the exit status says "try again later".
#[derive(Debug, thiserror::Error)]
#[error(
    "a write to the store failed ({0}); it writes no more until it is opened again: exiting so that a restart does"
)]
pub struct StoreFailed(pub String);

/// Parses and validates the config file, then swaps it in. The store, the
/// signer (the instance secret is not reloaded) and the counters stay.
fn reload(path: &Path, sink: &Sink) -> Result<Arc<Config>, String> {
    let config = crate::adapters::config::load(path).map_err(|e| e.to_string())?;
    // The outgoing transport must still build (passwords readable, CA files valid).
    Mailer::from_config(&config.outgoing)?;
    let config = Arc::new(config);
    let mut slot = sink.current.write().unwrap_or_else(|p| p.into_inner());
    let knowledge = crate::pipeline::load_knowledge(&config)?;
    let next = Pipeline {
        intent: crate::pipeline::load_intent(&config.instance.data_dir),
        knowledge,
        config: config.clone(),
        ..slot.clone()
    };
    *slot = next;
    Ok(config)
}

/// Timers: wake at the next due time, at most a minute apart (new timers
/// appear as mail arrives), and fire what is due under the writer lock.
/// Instances sharing a store fire timers under one lease, so each fires once.
async fn timers(sink: Sink, mut stop: watch::Receiver<bool>) {
    let mut lease = crate::transports::Lease::new("timers");
    loop {
        let pipeline = sink.pipeline();
        if lease.held(&sink) {
            let fired = crate::transports::blocking(|| {
                let _guard = sink.writer.lock().unwrap_or_else(|p| p.into_inner());
                pipeline.tick(Timestamp::now())
            });
            match fired {
                Ok(t) if t.fired > 0 => sink.wake_sender.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "timer pass failed"),
            }
        }
        let most = crate::transports::Lease::interval(&sink)
            .map_or(Duration::from_secs(60), |i| i.min(Duration::from_secs(60)));
        let wait = match crate::transports::blocking(|| pipeline.store.next_due()) {
            Ok(Some(at)) => Duration::from_secs((at.as_second() - Timestamp::now().as_second()).clamp(0, 60) as u64),
            _ => most,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.min(most).max(Duration::from_millis(200))) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            lease.release(&sink);
            return;
        }
    }
}

/// Keeps the full-text index up with the store: every two seconds, and at start
/// (where a missing or deleted index is built again).
async fn indexer(sink: Sink, search: Arc<crate::adapters::search::SearchIndex>, mut stop: watch::Receiver<bool>) {
    loop {
        let store = sink.pipeline().store.clone();
        let search = search.clone();
        let started = std::time::Instant::now();
        let halt = stop.clone();
        match tokio::task::spawn_blocking(move || search.catch_up(&*store, &|| *halt.borrow())).await {
            Ok(Ok(c)) if c.indexed > 100 => {
                tracing::info!(
                    tickets = c.indexed,
                    ms = started.elapsed().as_millis() as u64,
                    "search index caught up"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "search index update failed; retrying"),
            Err(e) => tracing::error!(error = %e, "search index update panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// `[intent] retrain`: learns the intent model again from the tickets every
/// interval and after each reload, off the async workers, and puts it in
/// force at once; too few labelled tickets keep the model there is.
async fn retrainer(sink: Sink, now: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let mut last = std::time::Instant::now();
    loop {
        let every = sink.pipeline().config.intent.retrain;
        let wait = every.map_or(Duration::from_secs(60), |e| {
            e.saturating_sub(last.elapsed()).min(Duration::from_secs(60))
        });
        let asked = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = now.notified() => true,
            _ = stop.changed() => false,
        };
        if *stop.borrow() {
            return;
        }
        let Some(every) = sink.pipeline().config.intent.retrain else {
            continue;
        };
        if !asked && last.elapsed() < every {
            continue;
        }
        last = std::time::Instant::now();
        let pipeline = sink.pipeline();
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || pipeline.retrain_intent(Timestamp::now())).await {
            Ok(Ok(Some(model))) => {
                tracing::info!(
                    examples = model.examples,
                    labels = model.labels.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "intent model retrained"
                );
                let model = Arc::new(model);
                sink.current.write().unwrap_or_else(|p| p.into_inner()).intent = Some(model);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "intent retraining failed; the model in force stays"),
            Err(e) => tracing::error!(error = %e, "intent retraining panicked"),
        }
    }
}

/// The first blob sweep waits at most this long after the start, which is
/// busy enough (recovery, queued mail, the search index).
const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(600);

/// Deletes blobs no record names and forgets `Ack` records older than
/// [`crate::adapters::store::ACKS_KEPT`]: every `[store] sweep_every` (a day
/// by default), the first time at most ten minutes after the start.
async fn sweeper(sink: Sink, mut stop: watch::Receiver<bool>) {
    let first = sink.pipeline().config.store.sweep_every.min(FIRST_SWEEP_AFTER);
    tokio::select! {
        _ = tokio::time::sleep(first) => {}
        _ = stop.changed() => return,
    }
    loop {
        let store = sink.pipeline().store.clone();
        match tokio::task::spawn_blocking(move || store.sweep_blobs()).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(blobs = n, "unreferenced blobs swept"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "blob sweep failed"),
            Err(e) => tracing::error!(error = %e, "blob sweep panicked"),
        }
        let store = sink.pipeline().store.clone();
        let before = Timestamp::now()
            .checked_sub(crate::adapters::store::ACKS_KEPT)
            .unwrap_or(Timestamp::MIN);
        match tokio::task::spawn_blocking(move || store.prune_acks(before)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(records = n, "old rate-limit and one-time records pruned"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "pruning old rate-limit records failed"),
            Err(e) => tracing::error!(error = %e, "pruning old rate-limit records panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(sink.pipeline().config.store.sweep_every) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// The outbox sender: after every store change and every second.
async fn sender(sink: Sink, mut stop: watch::Receiver<bool>) {
    let mut mailer: Option<(String, Mailer)> = None;
    let unrecorded = crate::transports::Unrecorded::default();
    loop {
        let pipeline = sink.pipeline();
        // Rebuild the transport after every reload: a rotated password file
        // is read again even when [outgoing] itself did not change.
        let key = format!("{:p}", Arc::as_ptr(&pipeline.config));
        let mut fresh = false;
        if mailer.as_ref().is_none_or(|(k, _)| *k != key) {
            match Mailer::from_config(&pipeline.config.outgoing) {
                Ok(m) => {
                    fresh = mailer.is_some();
                    mailer = Some((key, m));
                }
                Err(e) => tracing::error!(error = %e, "cannot set up the outgoing transport"),
            }
        }
        if let Some((_, m)) = &mailer {
            let stopping = || *stop.borrow();
            match drain_with(&pipeline, m, Timestamp::now(), fresh, &stopping, &unrecorded).await {
                Ok(s) if s.sent + s.failed > 0 => tracing::debug!(?s, "outbox pass"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "outbox pass failed"),
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = sink.wake_sender.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// READY=1 once every mailbox has logged in (or is being watched); then
/// STATUS lines and the watchdog, fed from this loop.
async fn readiness(sink: Sink, mut stop: watch::Receiver<bool>) {
    let watchdog = crate::notify::watchdog_interval().map(|d| d / 2);
    let mut ready = false;
    let mut last_status = String::new();
    loop {
        let pipeline = sink.pipeline();
        let boxes = pipeline.metrics.mailboxes();
        let up = pipeline
            .config
            .mailboxes
            .iter()
            .filter(|m| boxes.get(&m.name).is_some_and(|s| s.ready()))
            .count();
        let total = pipeline.config.mailboxes.len();
        if !ready && up == total {
            ready = true;
            notify(&format!("READY=1\nSTATUS={up} of {total} mailboxes connected"));
            tracing::info!("ready");
        }
        let depth = crate::transports::blocking(|| pipeline.store.outbox_depth())
            .map(|(n, _)| n)
            .unwrap_or(0);
        let status = format!("STATUS={up} of {total} mailboxes connected, outbox {depth}");
        if ready && status != last_status {
            notify(&status);
            last_status = status;
        }
        if watchdog.is_some() {
            notify("WATCHDOG=1");
        }
        let tick = watchdog.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}
