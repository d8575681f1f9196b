//! Real servers for the integration tests: Dovecot (IMAP) and aiosmtpd (SMTP),
//! each started in a temporary directory on a loopback port and stopped by PID.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory every server user (nobody) can enter.
pub fn temp_dir(tag: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| sweep_dead_runs(&base));
    let dir = base.join(format!(
        "postdesk-it-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        tag
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o755);
    dir
}

/// Removes the directories of runs whose process is gone: a run killed
/// before it tidied up left them, and in `/dev/shm` they hold memory (a
/// PostgreSQL cluster of the suite's pass is about 2 GB).
fn sweep_dead_runs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("postdesk-it-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A free loopback port (bound then released), below the kernel's range of
/// ephemeral ports: a port from that range, once released, can become the
/// local port of any outgoing connection (a pooled PostgreSQL connection lives
/// as long as its test), and a daemon restarted on it would find it taken.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (first, span) = if low > 12_000 {
        (low - 10_000, 10_000)
    } else {
        (1024, low.max(2048) - 1024)
    };
    let start = std::process::id() * 7919;
    for _ in 0..span {
        let port = first + (start + NEXT.fetch_add(1, Ordering::SeqCst)) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port between {first} and {}", first + span)
}

fn wait_for_greeting(port: u16, prefix: &str, what: &str, log: &Path) {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            if BufReader::new(&mut s).read_line(&mut line).is_ok() && line.starts_with(prefix) {
                let _ = s.write_all(b"a LOGOUT\r\n");
                return;
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            let log = fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not greet on port {port}; log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running Dovecot.
pub struct Dovecot {
    pub dir: PathBuf,
    pub port: u16,
    /// Implicit-TLS port, when started with TLS.
    pub imaps_port: Option<u16>,
    /// The certificate (PEM) to trust, when started with TLS.
    pub cert: Option<PathBuf>,
    master_pid: i32,
}

/// The password every test user has.
pub const PASSWORD: &str = "secret";

impl Dovecot {
    /// Starts Dovecot with the given users (plain IMAP on loopback).
    pub fn start(users: &[&str]) -> Dovecot {
        Self::start_with(users, false)
    }

    /// Starts Dovecot; with `tls`, also an IMAPS listener and STARTTLS.
    pub fn start_with(users: &[&str], tls: bool) -> Dovecot {
        Self::start_full(users, tls, None)
    }

    /// Starts Dovecot whose users also log in by XOAUTH2 and OAUTHBEARER:
    /// its `oauth2` passdb asks `introspection_url` (RFC 7662, POST) about
    /// each token and takes it when the answer is active for that user.
    pub fn start_oauth2(users: &[&str], introspection_url: &str) -> Dovecot {
        Self::start_full(users, false, Some(introspection_url))
    }

    fn start_full(users: &[&str], tls: bool, oauth2: Option<&str>) -> Dovecot {
        let dir = temp_dir("dovecot");
        for sub in ["run", "state", "home"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        set_mode(&dir.join("home"), 0o777);
        let mut passwd = String::new();
        for u in users {
            passwd.push_str(&format!("{u}:{{PLAIN}}{PASSWORD}::::::\n"));
        }
        fs::write(dir.join("passwd"), passwd).unwrap();
        let port = free_port();
        let (imaps_port, cert, ssl) = if tls {
            let (cert, key) = make_cert(&dir);
            let p = free_port();
            (
                Some(p),
                Some(cert.clone()),
                format!(
                    "ssl = yes\nssl_cert = <{}\nssl_key = <{}\n",
                    cert.display(),
                    key.display()
                ),
            )
        } else {
            (None, None, "ssl = no\n".to_string())
        };
        let d = dir.display();
        let (mechanisms, oauth2_passdb) = match oauth2 {
            None => ("plain login", String::new()),
            Some(url) => {
                fs::write(
                    dir.join("oauth2.conf.ext"),
                    format!(
                        "introspection_mode = post\nintrospection_url = {url}\nusername_attribute = username\nactive_attribute = active\nactive_value = true\nforce_introspection = yes\n"
                    ),
                )
                .unwrap();
                (
                    "plain login xoauth2 oauthbearer",
                    format!(
                        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {d}/oauth2.conf.ext\n}}\n"
                    ),
                )
            }
        };
        let conf = format!(
            r#"instance_name = postdesk-it-{port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
first_valid_uid = 1
first_valid_gid = 1
mail_uid = nobody
mail_gid = nogroup
mail_location = maildir:~/Maildir
mail_fsync = never
{oauth2_passdb}passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"#,
            imaps = imaps_port.unwrap_or(0),
        );
        let conf_path = dir.join("dovecot.conf");
        fs::write(&conf_path, conf).unwrap();
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout")).unwrap())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .status()
            .expect("dovecot is installed (tests/run installs it)");
        assert!(
            status.success(),
            "dovecot failed to start: {}",
            fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
        wait_for_greeting(port, "* OK", "dovecot", &dir.join("dovecot.log"));
        let master_pid: i32 = fs::read_to_string(dir.join("run/master.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Dovecot {
            dir,
            port,
            imaps_port,
            cert,
            master_pid,
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.master_pid)])
            .status();
        let _ = Command::new("kill")
            .args(["-KILL", &self.master_pid.to_string()])
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed end-entity certificate for 127.0.0.1 and localhost.
pub fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    set_mode(&key, 0o644);
    (cert, key)
}

/// A running aiosmtpd sink.
pub struct Smtp {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Smtp {
    pub fn start() -> Smtp {
        Self::start_with(&[])
    }

    /// Starts the sink with extra options (`--starttls CERT KEY`, `--implicit CERT KEY`, `--auth USER:PASS`).
    pub fn start_with(options: &[&str]) -> Smtp {
        let dir = temp_dir("smtp");
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&dir)
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("python3 with aiosmtpd is installed (tests/run installs it)");
        let mut first = [0u8; 5];
        let ok = child.stdout.as_mut().unwrap().read_exact(&mut first).is_ok() && &first == b"READY";
        assert!(
            ok,
            "smtp sink failed: {}",
            fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
        if !options.contains(&"--implicit") {
            wait_for_greeting(port, "220", "smtp sink", &dir.join("stderr"));
        }
        Smtp { port, dir, child }
    }

    /// Scripts failures: `stage` is mail, rcpt or data.
    pub fn fail_next(&self, stage: &str, answers: &[&str]) {
        let v = serde_json::json!({ stage: answers });
        fs::write(self.dir.join("control.json"), v.to_string()).unwrap();
    }

    /// Messages received so far, in order, as text.
    pub fn received(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| String::from_utf8_lossy(&fs::read(f).unwrap()).into_owned())
            .collect()
    }

    /// Messages received so far for one recipient, in order.
    pub fn received_by(&self, rcpt: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .zip(self.envelopes())
            .filter(|(_, e)| e["rcpt_tos"].as_array().unwrap().iter().any(|r| r == rcpt))
            .map(|(m, _)| m)
            .collect()
    }

    /// Envelopes of the messages received so far (same order as `received`).
    pub fn envelopes(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| p.with_extension("json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_str(&fs::read_to_string(f).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One request an [`HttpReceiver`] took, and the status it answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

type Replies = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (String, Duration)>>>;
/// Answers a request's body with a status and a body.
pub type Handler = std::sync::Arc<dyn Fn(&str) -> (u16, String) + Send + Sync>;
type Handlers = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Handler>>>;

/// The test's own HTTP server on a loopback port (webhooks, lookups): it
/// records every request and answers each path with the status set for it
/// (200 when none is set). Stopped on drop.
pub struct HttpReceiver {
    pub port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    statuses: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u16>>>,
    replies: Replies,
    handlers: Handlers,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let statuses: Arc<Mutex<std::collections::HashMap<String, u16>>> = Arc::default();
        let replies: Replies = Arc::default();
        let handlers: Handlers = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st, sp, rp) = (got.clone(), statuses.clone(), stop.clone(), replies.clone());
        let hs = handlers.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let bare = path.split('?').next().unwrap_or("").to_string();
                let body_text = String::from_utf8_lossy(&body).into_owned();
                let handler = hs.lock().unwrap().get(&bare).cloned();
                let (status, reply, delay) = match handler {
                    Some(h) => {
                        let (status, reply) = h(&body_text);
                        (status, reply, Duration::ZERO)
                    }
                    None => {
                        let status = st.lock().unwrap().get(&bare).copied().unwrap_or(200);
                        let (reply, delay) = rp
                            .lock()
                            .unwrap()
                            .get(&bare)
                            .cloned()
                            .unwrap_or(("ok".into(), Duration::ZERO));
                        (status, reply, delay)
                    }
                };
                g.lock().unwrap().push(Received {
                    path,
                    headers,
                    body: body_text,
                    status,
                });
                std::thread::sleep(delay);
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                        reply.len()
                    )
                    .as_bytes(),
                );
            }
        });
        HttpReceiver {
            port,
            got,
            statuses,
            replies,
            handlers,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers requests for `path` with `status` from now on.
    pub fn answer(&self, path: &str, status: u16) {
        self.statuses.lock().unwrap().insert(path.to_string(), status);
    }

    /// Answers requests for `path` (the query aside) with `body` after `delay`.
    pub fn reply(&self, path: &str, body: &str, delay: Duration) {
        self.replies
            .lock()
            .unwrap()
            .insert(path.to_string(), (body.to_string(), delay));
    }

    /// Answers requests for `path` by `handler` (given the body) from now on.
    pub fn respond(&self, path: &str, handler: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) {
        self.handlers
            .lock()
            .unwrap()
            .insert(path.to_string(), std::sync::Arc::new(handler));
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
