//! A private PostgreSQL cluster for the tests: initdb into a temporary
//! folder, the server on a loopback port, stopped by PID. Debian's
//! `postgresql` package provides the binaries (`tests/run` installs it);
//! as root the server runs as the `postgres` user.

use crate::servers::{free_port, temp_dir};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static DATABASES: AtomicU32 = AtomicU32::new(0);

/// A running (or stopped) cluster.
pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
    /// The server's certificate, when started with TLS.
    pub cert: Option<PathBuf>,
    options: Vec<String>,
    server: Option<Child>,
}

/// Where Debian keeps the server binaries (the newest version), else `PATH`.
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.sort();
    match versions.into_iter().rev().map(|b| b.join(name)).find(|p| p.is_file()) {
        Some(p) => p,
        None => PathBuf::from(name),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The command, run as `postgres` when we are root (the server refuses root).
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// initdb and start a cluster of its own.
    pub fn start() -> Postgres {
        Self::start_with(false)
    }

    /// A cluster that also speaks TLS, with a self-signed certificate for 127.0.0.1.
    pub fn start_tls() -> Postgres {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Postgres {
        let dir = temp_dir("pg");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the cluster folder failed");
        }
        let out = as_server_user(&bin("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("initdb runs (is postgresql installed? tests/run installs it)");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            dir,
            port: free_port(),
            cert: None,
            options: Vec::new(),
            server: None,
        };
        if tls {
            let certs = pg.dir.join("certs");
            fs::create_dir_all(&certs).unwrap();
            let (cert, key) = crate::servers::make_cert(&certs);
            // The server wants its key private and its own.
            let server_key = pg.dir.join("data/server.key");
            fs::copy(&key, &server_key).unwrap();
            crate::servers::set_mode(&server_key, 0o600);
            if is_root() {
                let _ = Command::new("chown").arg("postgres:postgres").arg(&server_key).status();
            }
            pg.options = vec![
                "ssl=on".into(),
                format!("ssl_cert_file={}", cert.display()),
                "ssl_key_file=server.key".into(),
            ];
            pg.cert = Some(cert);
        }
        pg.resume();
        pg
    }

    /// Starts the server (again) on its folder and port, and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "already running");
        let log = fs::File::create(self.dir.join("server.log")).unwrap();
        if is_root() {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(self.dir.join("server.log"))
                .status();
        }
        let child = as_server_user(&bin("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=32MB",
                // Memory kept in the cluster's folder, gone with it even
                // after a kill (posix segments stay in /dev/shm), and the
                // write-ahead log kept small (the folder is in memory).
                "-c",
                "dynamic_shared_memory_type=mmap",
                "-c",
                "max_wal_size=96MB",
                "-c",
                "min_wal_size=32MB",
            ])
            .args(self.options.iter().flat_map(|o| ["-c", o.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        self.server = Some(child);
        let start = Instant::now();
        while !self.sql_ok("SELECT 1") {
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "postgres did not start on port {}; log:\n{}",
                    self.port,
                    fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: sessions cut, the WAL flushed) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The server's PID.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    fn psql(&self, database: &str, sql: &str) -> std::process::Output {
        Command::new(bin("psql"))
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .output()
            .expect("psql runs")
    }

    fn sql_ok(&self, sql: &str) -> bool {
        self.psql("postgres", sql).status.success()
    }

    /// Runs SQL in a database and returns its output (rows, `|`-separated).
    pub fn query(&self, database: &str, sql: &str) -> String {
        let out = self.psql(database, sql);
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A fresh, empty database; its name.
    pub fn create_database(&self) -> String {
        let name = format!(
            "desk_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        self.query("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// The URL of a database (trust authentication on loopback: no password).
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// `[store]` for a desk on a fresh database of this cluster.
    pub fn store_config(&self, database: &str) -> String {
        format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 4\nlease_timeout = \"3s\"\n",
            self.url(database)
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The cluster this test process shares between desks (the whole suite on
/// PostgreSQL). Statics are never dropped, so a watcher stops it by PID
/// when this process exits.
pub fn shared() -> &'static Postgres {
    static SHARED: OnceLock<Postgres> = OnceLock::new();
    SHARED.get_or_init(|| {
        let pg = Postgres::start();
        let pid = pg.pid().expect("running");
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -INT {pid}; sleep 10; kill -KILL {pid} 2>/dev/null; rm -rf '{dir}'",
            me = std::process::id(),
            dir = pg.dir.display()
        );
        // Never waited for: it outlives this process by design, to stop the server after it.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the watcher starts");
        pg
    })
}

/// Whether this run puts every desk on PostgreSQL (`POSTDESK_TEST_STORE=postgres`).
pub fn suite_on_postgres() -> bool {
    std::env::var("POSTDESK_TEST_STORE").as_deref() == Ok("postgres")
}
