//! `postdesk run`: one task per mailbox, the outbox sender, and shutdown on
//! SIGTERM/SIGINT at safe points (after the current mail), flushing last.

use crate::config::SourceConfig;
use crate::pipeline::Pipeline;
use crate::sender::{Mailer, drain};
use crate::source::Sink;
use jiff::Timestamp;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

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

/// Runs the daemon until `shutdown` resolves.
pub async fn run(pipeline: Pipeline, config_path: PathBuf, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = pipeline.config.clone();
    let mailer = Mailer::from_config(&config.outgoing).map_err(anyhow::Error::msg)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let sink = Sink {
        pipeline: pipeline.clone(),
        writer: Arc::new(Mutex::new(())),
        wake_sender: Arc::new(Notify::new()),
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for the HTTP API: {e}", config.http.listen))?;
    let token = match &config.http.token {
        Some(source) => Some(source.load().map_err(anyhow::Error::msg)?),
        None => None,
    };
    tracing::info!(config = %config_path.display(), mailboxes = config.mailboxes.len(), http = %config.http.listen, "postdesk running");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::http::serve(
        listener,
        Arc::new(crate::http::Api {
            pipeline: pipeline.clone(),
            token,
        }),
        stop_rx.clone(),
    ));
    for m in &config.mailboxes {
        let sink = sink.clone();
        let stop = stop_rx.clone();
        let name = m.name.clone();
        match &m.source {
            SourceConfig::Imap(imap) => {
                tasks.spawn(crate::source::imap::run(sink, name, imap.clone(), stop));
            }
            SourceConfig::Maildir { path } => {
                tasks.spawn(crate::source::maildir::run(sink, name, path.clone(), stop));
            }
        }
    }
    {
        // Timers: wake at the next due time, at most a minute apart (new timers
        // appear as mail arrives), and fire what is due under the writer lock.
        let sink = sink.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            loop {
                let fired = {
                    let _guard = sink.writer.lock().unwrap_or_else(|p| p.into_inner());
                    sink.pipeline.tick(Timestamp::now())
                };
                match fired {
                    Ok(t) if t.fired > 0 => sink.wake_sender.notify_one(),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "timer pass failed"),
                }
                let wait = match sink.pipeline.store.next_due() {
                    Ok(Some(at)) => {
                        Duration::from_secs((at.as_second() - Timestamp::now().as_second()).clamp(0, 60) as u64)
                    }
                    _ => Duration::from_secs(60),
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return;
                }
            }
        });
    }
    {
        let sink = sink.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            loop {
                match drain(&sink.pipeline, &mailer, Timestamp::now()).await {
                    Ok(s) if s.sent + s.failed > 0 => tracing::debug!(?s, "outbox pass"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "outbox pass failed"),
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
        });
    }
    shutdown.await;
    let _ = stop_tx.send(true);
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
    pipeline.store.flush()?;
    tracing::info!("stopped");
    Ok(())
}
