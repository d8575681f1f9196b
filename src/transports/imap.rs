//! IMAP source (async-imap on tokio, rustls): implicit TLS, STARTTLS, or plain
//! to loopback only; UIDVALIDITY+UID position per mailbox; UID FETCH in
//! batches; IDLE with a polling fallback; processed mail moved or flagged
//! only after the store has flushed; reconnect with backoff and jitter.

use super::Sink;
use crate::adapters::config::{ImapConfig, TlsMode};
use crate::adapters::store::Position;
use crate::pipeline::Origin;
use async_imap::Session;
use async_imap::extensions::idle::IdleResponse;
use futures::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A connection to the server, plain or TLS.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP (loopback only).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// IMAP failures.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// Network or TLS.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server said no or spoke nonsense.
    #[error("imap: {0}")]
    Imap(#[from] async_imap::error::Error),
    /// TLS setup or configuration.
    #[error("tls: {0}")]
    Tls(String),
    /// Login refused or password unreadable.
    #[error("login: {0}")]
    Login(String),
    /// The folder has no UIDVALIDITY.
    #[error("folder {0} has no UIDVALIDITY")]
    NoUidValidity(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] crate::adapters::store::StoreError),
    /// Another instance holds the mailbox's lease now.
    #[error("the mailbox's lease was lost")]
    LeaseLost,
}

/// The longest IDLE before re-issuing it (RFC 2177 asks for < 30 minutes).
const IDLE_MAX: Duration = Duration::from_secs(28 * 60);

/// Runs one IMAP mailbox until shutdown, reconnecting with backoff.
pub async fn run(sink: Sink, mailbox: String, config: ImapConfig, mut shutdown: watch::Receiver<bool>) {
    let mut failures = 0u32;
    let mut lease = super::Lease::new(super::mailbox_lease(&mailbox));
    // Whether this task is taking the mailbox over: decided at its first
    // connection (no position stored: postdesk never read it), kept across
    // reconnections until the folder has been read to its end once.
    let mut taking_over: Option<bool> = None;
    loop {
        // Instances sharing a store read each mailbox one at a time.
        if !super::acquire(&sink, &mut lease, &mut shutdown).await {
            return;
        }
        let result = tokio::select! {
            r = session_loop(&sink, &mailbox, &config, &mut shutdown, &mut failures, &mut taking_over) => r,
            _ = super::hold(&sink, &mut lease) => Err(ImapError::LeaseLost),
        };
        match result {
            Ok(()) => {
                lease.release(&sink);
                return;
            }
            Err(ImapError::LeaseLost) => {
                sink.pipeline().metrics.mailbox_up(&mailbox, false);
                tracing::warn!(mailbox = %mailbox, "another instance took the mailbox; standing by");
            }
            Err(e) => {
                sink.pipeline().metrics.mailbox_up(&mailbox, false);
                failures += 1;
                let base = Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
                let delay = base + jitter(base / 2);
                tracing::warn!(mailbox = %mailbox, error = %e, retry_in_ms = delay.as_millis() as u64, "imap connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(u64::from(nanos) % (max.as_millis() as u64 + 1))
}

/// Connects and logs in.
pub async fn connect(config: &ImapConfig) -> Result<Session<Conn>, ImapError> {
    let tcp = TcpStream::connect((config.host.as_str(), config.port)).await?;
    tcp.set_nodelay(true)?;
    let client = match config.tls {
        TlsMode::Plain => {
            let mut c = async_imap::Client::new(Conn::Plain(tcp));
            greeting(&mut c).await?;
            c
        }
        TlsMode::Implicit => {
            let tls = tls_connect(config, tcp).await?;
            let mut c = async_imap::Client::new(Conn::Tls(Box::new(tls)));
            greeting(&mut c).await?;
            c
        }
        TlsMode::Starttls => {
            let mut c = async_imap::Client::new(Conn::Plain(tcp));
            greeting(&mut c).await?;
            c.run_command_and_check_ok("STARTTLS", None).await?;
            let Conn::Plain(tcp) = c.into_inner() else {
                return Err(ImapError::Tls("unexpected stream".into()));
            };
            let tls = tls_connect(config, tcp).await?;
            async_imap::Client::new(Conn::Tls(Box::new(tls)))
        }
    };
    let Some(login) = &config.oauth2 else {
        let Some(password) = &config.password else {
            return Err(ImapError::Login("no password configured".into()));
        };
        let password = password.load().map_err(ImapError::Login)?;
        return client
            .login(&config.username, password.expose())
            .await
            .map_err(|(e, _)| ImapError::Login(e.to_string()));
    };
    // An access token; when the server refuses the one kept, a new one at once, on the same connection.
    let mut client = client;
    let mut token = super::blocking(|| super::oauth2::access_token(&login.provider)).map_err(ImapError::Login)?;
    let mut retried = false;
    loop {
        let response = super::oauth2::sasl(login, &config.username, &config.host, config.port, &token);
        match client
            .authenticate(super::oauth2::mechanism_name(login), SaslOnce(Some(response)))
            .await
        {
            Ok(session) => return Ok(session),
            Err((e, back)) => {
                super::oauth2::refused(&login.provider, &token);
                let fresh =
                    super::blocking(|| super::oauth2::access_token(&login.provider)).map_err(ImapError::Login)?;
                if retried || fresh == token {
                    return Err(ImapError::Login(format!(
                        "{} refused: {e}",
                        super::oauth2::mechanism_name(login)
                    )));
                }
                (client, token, retried) = (back, fresh, true);
            }
        }
    }
}

/// Answers the first SASL challenge with the initial response and any later
/// one (an XOAUTH2 error report) with nothing, which ends the exchange.
struct SaslOnce(Option<String>);

impl async_imap::Authenticator for SaslOnce {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        self.0.take().unwrap_or_default()
    }
}

async fn greeting(c: &mut async_imap::Client<Conn>) -> Result<(), ImapError> {
    match c.read_response().await? {
        Some(_) => Ok(()),
        None => Err(ImapError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "server closed before its greeting",
        ))),
    }
}

async fn tls_connect(
    config: &ImapConfig,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ImapError> {
    let connector = tls_connector(config.ca_file.as_deref())?;
    let name = ServerName::try_from(config.host.clone()).map_err(|e| ImapError::Tls(format!("bad host name: {e}")))?;
    Ok(connector.connect(name, tcp).await?)
}

/// A rustls connector trusting the web PKI roots plus `ca_file`.
pub fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, ImapError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| ImapError::Tls(format!("{}: {e}", path.display())))?;
        for c in certs {
            let c = c.map_err(|e| ImapError::Tls(format!("{}: {e}", path.display())))?;
            roots
                .add(c)
                .map_err(|e| ImapError::Tls(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn session_loop(
    sink: &Sink,
    mailbox: &str,
    config: &ImapConfig,
    shutdown: &mut watch::Receiver<bool>,
    failures: &mut u32,
    taking_over: &mut Option<bool>,
) -> Result<(), ImapError> {
    let mut session = connect(config).await?;
    let caps = session.capabilities().await?;
    let can_idle = caps.has_str("IDLE");
    let can_move = caps.has_str("MOVE");
    let can_uidplus = caps.has_str("UIDPLUS");
    if let Some(folder) = &config.processed {
        // Create it if missing; an error here only means it exists.
        let _ = session.create(folder).await;
    }
    let selected = session.select(&config.folder).await?;
    let uid_validity = selected
        .uid_validity
        .ok_or_else(|| ImapError::NoUidValidity(config.folder.clone()))?;
    let position = sink.pipeline().store.position(mailbox)?;
    // A takeover goes on until the folder has been read to its end once,
    // across reconnections and restarts (the position keeps it).
    let taking_over = taking_over.get_or_insert(position.is_none_or(|p| p.taking_over));
    if let Some(p) = position.filter(|p| p.uid_validity != uid_validity) {
        tracing::warn!(
            mailbox,
            old = p.uid_validity,
            new = uid_validity,
            "UIDVALIDITY changed: re-reading the folder, duplicates are skipped"
        );
    }
    let stored_uid = position
        .filter(|p| p.uid_validity == uid_validity)
        .map_or(0, |p| p.last_uid);
    let mut last_uid = stored_uid;
    // The position of this folder after `last_uid`, as stored with a mail or a batch.
    let position_after = |last_uid: u32, taking_over: bool| Position {
        uid_validity,
        last_uid,
        taking_over,
    };
    // With a processed folder, whatever is still in the folder is unprocessed or
    // processed-but-not-moved (a crash between flush and MOVE): read it all once;
    // the source keys make the second kind cheap duplicates that are moved now.
    if config.processed.is_some() {
        last_uid = 0;
    }
    *failures = 0;
    sink.pipeline()
        .metrics
        .mailbox_fetched(mailbox, jiff::Timestamp::now().as_second());
    tracing::info!(mailbox, folder = %config.folder, uid_validity, last_uid, idle = can_idle && config.idle, "imap connected");
    loop {
        // Fetch everything above the position, in batches.
        loop {
            let mut uids: Vec<u32> = session
                .uid_search(format!("UID {}:*", last_uid + 1))
                .await?
                .into_iter()
                .filter(|u| *u > last_uid)
                .collect();
            if uids.is_empty() {
                // Read to its end: what comes now is new, however long it
                // waited (a server down for days), never history. Kept, so
                // that a restart does not take an emptied mailbox over again.
                if *taking_over {
                    *taking_over = false;
                    tracing::info!(mailbox, folder = %config.folder, "mailbox taken over: read to its end; what arrives from now on is live");
                    sink.pipeline()
                        .set_position(mailbox, position_after(last_uid.max(stored_uid), false))?;
                }
                break;
            }
            uids.sort_unstable();
            uids.truncate(config.batch_size as usize);
            let set = uid_set(&uids);
            // Sizes first: a mail over the limit is never fetched whole, only its header.
            let max = sink.pipeline().config.limits.max_message_bytes as u64;
            let mut oversized: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
            {
                let mut stream = session.uid_fetch(&set, "(UID RFC822.SIZE)").await?;
                while let Some(f) = stream.next().await {
                    let f = f?;
                    if let (Some(uid), Some(size)) = (f.uid, f.size)
                        && u64::from(size) > max
                    {
                        oversized.insert(uid, u64::from(size));
                    }
                }
            }
            let whole: Vec<u32> = uids.iter().copied().filter(|u| !oversized.contains_key(u)).collect();
            let big: Vec<u32> = uids.iter().copied().filter(|u| oversized.contains_key(u)).collect();
            // With the server's time of delivery (INTERNALDATE): when postdesk
            // takes a mailbox over, the mail that waited in it past
            // `backfill_window` is history, told to nobody. Once postdesk
            // has read the mailbox, whatever it finds later is live, however
            // long it waited (postdesk or the server down over a weekend).
            let mut fetched: Vec<(u32, Vec<u8>, Option<i64>)> = Vec::with_capacity(uids.len());
            for (part, items) in [
                (&whole, "(UID INTERNALDATE BODY.PEEK[])"),
                (&big, "(UID INTERNALDATE BODY.PEEK[HEADER])"),
            ] {
                if part.is_empty() {
                    continue;
                }
                let mut stream = session.uid_fetch(uid_set(part), items).await?;
                while let Some(f) = stream.next().await {
                    let f = f?;
                    let bytes = if oversized.is_empty() || f.uid.is_some_and(|u| !oversized.contains_key(&u)) {
                        f.body()
                    } else {
                        f.header()
                    };
                    if let (Some(uid), Some(bytes)) = (f.uid, bytes) {
                        fetched.push((uid, bytes.to_vec(), f.internal_date().map(|d| d.timestamp())));
                    }
                }
            }
            fetched.sort_by_key(|(u, _, _)| *u);
            let now = jiff::Timestamp::now();
            let window = sink.pipeline().config.automation.backfill_window;
            let origin_of = |uid: u32, delivered: Option<i64>| {
                let delivered = delivered
                    .filter(|_| *taking_over)
                    .and_then(|s| jiff::Timestamp::from_second(s).ok());
                let (origin, at) = Origin::delivered(mailbox, delivered, now, window);
                let origin = Origin {
                    source_key: Some(format!("imap:{mailbox}:{uid_validity}:{uid}")),
                    position: Some(position_after(uid, *taking_over)),
                    ..origin
                };
                (origin, at)
            };
            let origins: Vec<(Origin, jiff::Timestamp)> = fetched
                .iter()
                .map(|(uid, _, delivered)| origin_of(*uid, *delivered))
                .collect();
            let mut whole: Vec<(&[u8], &Origin, jiff::Timestamp)> = Vec::new();
            for ((uid, raw, _), (origin, at)) in fetched.iter().zip(&origins) {
                match oversized.get(uid) {
                    Some(size) => {
                        let whereabouts = format!(
                            "the IMAP server, folder {}",
                            config.processed.as_deref().unwrap_or(&config.folder)
                        );
                        let processed = sink.process_oversized(raw, *size, &whereabouts, origin)?;
                        tracing::debug!(mailbox, uid, ?processed, "imap mail processed");
                    }
                    None => whole.push((raw, origin, *at)),
                }
            }
            for ((_, origin, _), processed) in whole.iter().zip(sink.process_batch_at(&whole)?) {
                tracing::debug!(mailbox, source = ?origin.source_key, ?processed, "imap mail processed");
            }
            // Durable first, then tell the server.
            sink.flush()?;
            let done: Vec<u32> = fetched.iter().map(|(u, _, _)| *u).collect();
            if !done.is_empty() {
                mark_processed(&mut session, config, &uid_set(&done), can_move, can_uidplus).await?;
            }
            let max = uids.iter().copied().max().unwrap_or(last_uid);
            if max > last_uid {
                last_uid = max;
                sink.pipeline()
                    .set_position(mailbox, position_after(last_uid, *taking_over))?;
            }
            if *shutdown.borrow() {
                break;
            }
        }
        sink.pipeline()
            .metrics
            .mailbox_fetched(mailbox, jiff::Timestamp::now().as_second());
        while session.unsolicited_responses.try_recv().is_ok() {}
        if *shutdown.borrow() {
            let _ = session.logout().await;
            return Ok(());
        }
        if config.idle && can_idle {
            let mut idle = session.idle();
            idle.init().await?;
            let result = {
                let (wait, stop) = idle.wait_with_timeout(IDLE_MAX);
                let mut stop = Some(stop);
                let mut wait = std::pin::pin!(wait);
                let first = tokio::select! {
                    r = &mut wait => Some(r),
                    _ = shutdown.changed() => { stop.take(); None }
                };
                match first {
                    Some(r) => r,
                    None => wait.await,
                }
            };
            match result? {
                IdleResponse::NewData(_) => {
                    tracing::debug!(mailbox, "idle: server reports changes")
                }
                IdleResponse::Timeout => tracing::debug!(mailbox, "idle: re-issuing"),
                IdleResponse::ManualInterrupt => {}
            }
            session = idle.done().await?;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(config.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
            session.noop().await?;
        }
    }
}

async fn mark_processed(
    session: &mut Session<Conn>,
    config: &ImapConfig,
    set: &str,
    can_move: bool,
    can_uidplus: bool,
) -> Result<(), ImapError> {
    match &config.processed {
        Some(folder) if can_move => session.uid_mv(set, folder).await?,
        Some(folder) => {
            session.uid_copy(set, folder).await?;
            drain_stream(session.uid_store(set, "+FLAGS.SILENT (\\Deleted)").await?).await?;
            if can_uidplus {
                drain_stream(session.uid_expunge(set).await?).await?;
            } else {
                drain_stream(session.expunge().await?).await?;
            }
        }
        None => drain_stream(session.uid_store(set, "+FLAGS.SILENT (\\Seen)").await?).await?,
    }
    Ok(())
}

async fn drain_stream<T, S>(stream: S) -> Result<(), ImapError>
where
    S: futures::Stream<Item = async_imap::error::Result<T>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        item?;
    }
    Ok(())
}

/// Compresses sorted UIDs into an IMAP set: `1:3,7,9:10`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn uid_sets() {
        assert_eq!(super::uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(super::uid_set(&[5]), "5");
        assert_eq!(super::uid_set(&[]), "");
    }
}
