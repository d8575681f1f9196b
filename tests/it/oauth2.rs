//! OAuth2 mailboxes: Dovecot's `oauth2` passdb and the SMTP sink check each
//! access token at an introspection endpoint the test runs; the test's
//! token endpoint issues, rotates and refuses tokens as a provider would.

use crate::servers::{Dovecot, HttpReceiver, Smtp};
use crate::support::{DeskConfig, Imap, check_refuses, mail, wait_until};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// A form body (`a=b&c=d`, percent-encoded, `+` for space) as a map.
fn form(body: &str) -> HashMap<String, String> {
    use postdesk::transports::percent_decode;
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

/// What the test's provider knows.
#[derive(Default)]
struct Provider {
    issued: u32,
    /// The refresh token it takes now (each refresh rotates it).
    refresh: String,
    /// Tokens the introspection endpoint calls active.
    active: HashSet<String>,
    /// Tokens issued but refused from the start (revoked early).
    revoke_next: bool,
    expires_in: u64,
}

/// Starts the provider: `/token` (refresh-token grant with client id and
/// secret checked, rotating the refresh token) and `/introspect`.
fn provider(first_refresh: &str) -> (HttpReceiver, Arc<Mutex<Provider>>) {
    let idp = HttpReceiver::start();
    let state = Arc::new(Mutex::new(Provider {
        refresh: first_refresh.to_string(),
        revoke_next: true,
        expires_in: 2,
        ..Provider::default()
    }));
    let s = state.clone();
    idp.respond("/token", move |body| {
        let f = form(body);
        let mut p = s.lock().unwrap();
        let good = f.get("grant_type").map(String::as_str) == Some("refresh_token")
            && f.get("refresh_token") == Some(&p.refresh)
            && f.get("client_id").map(String::as_str) == Some("postdesk-test")
            && f.get("client_secret").map(String::as_str) == Some("s3cret")
            && f.get("scope").map(String::as_str) == Some("imap smtp offline_access");
        if !good {
            return (
                400,
                r#"{"error":"invalid_grant","error_description":"bad grant"}"#.into(),
            );
        }
        p.issued += 1;
        let token = format!("tok-{}", p.issued);
        // The first token is revoked before its stated expiry: servers refuse it.
        if !std::mem::take(&mut p.revoke_next) {
            p.active.insert(token.clone());
        }
        p.refresh = format!("refresh-{}", p.issued);
        let answer = serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": p.expires_in,
            "refresh_token": p.refresh,
        });
        (200, answer.to_string())
    });
    let s = state.clone();
    idp.respond("/introspect", move |body| {
        let token = form(body).get("token").cloned().unwrap_or_default();
        if s.lock().unwrap().active.contains(&token) {
            (200, r#"{"active":true,"username":"support"}"#.into())
        } else {
            (200, r#"{"active":false}"#.into())
        }
    });
    (idp, state)
}

/// The tokens introspected by one server (by its User-Agent), in order.
fn introspected(idp: &HttpReceiver, by_python: bool) -> Vec<String> {
    idp.received()
        .iter()
        .filter(|r| r.path == "/introspect")
        .filter(|r| r.header("user-agent").unwrap_or("").contains("Python") == by_python)
        .map(|r| form(&r.body).get("token").cloned().unwrap_or_default())
        .collect()
}

#[test]
fn mailboxes_log_in_by_xoauth2_and_oauthbearer_and_tokens_are_refreshed() {
    let (idp, state) = provider("refresh-0");
    let dovecot = Dovecot::start_oauth2(&["support"], &idp.url("/introspect"));
    let smtp = Smtp::start_with(&["--oauth2", &idp.url("/introspect")]);
    let desk = DeskConfig::new()
        .raw_mailbox(&format!(
            "[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nimap = {{ host = \"127.0.0.1\", port = {}, tls = \"plain\", username = \"support\", auth = \"xoauth2\", oauth2 = \"idp\", processed = \"Processed\", poll_interval = \"1h\" }}\n",
            dovecot.port
        ))
        .raw_mailbox(&format!(
            "[[mailbox]]\nname = \"sales\"\naddress = \"sales@example.com\"\nimap = {{ host = \"127.0.0.1\", port = {}, tls = \"plain\", username = \"support\", auth = \"oauthbearer\", oauth2 = \"idp\", folder = \"Sales\", processed = \"Processed\", poll_interval = \"1h\" }}\n",
            dovecot.port
        ))
        .no_outgoing()
        .extra(&format!(
            "[outgoing]\nsmtp = {{ host = \"127.0.0.1\", port = {}, tls = \"plain\", timeout = \"10s\", username = \"support\", auth = \"xoauth2\", oauth2 = \"idp\" }}\nretry_base = \"1s\"\n",
            smtp.port
        ))
        .extra(&format!(
            "[[oauth2]]\nname = \"idp\"\ntoken_url = \"{}\"\nclient_id = \"postdesk-test\"\nclient_secret_env = \"POSTDESK_TEST_OAUTH_SECRET\"\nscopes = [\"imap\", \"smtp\", \"offline_access\"]\n",
            idp.url("/token")
        ))
        .build();
    let refresh_file = desk.dir.join("data/oauth2/idp.refresh_token");
    std::fs::create_dir_all(refresh_file.parent().unwrap()).unwrap();
    std::fs::write(&refresh_file, "refresh-0\n").unwrap();
    let mut imap = Imap::login(dovecot.port, "support");
    imap.cmd("CREATE Sales");
    imap.cmd("CREATE Processed");
    imap.append(
        "INBOX",
        &mail(
            "bob@customer.test",
            "support@example.com",
            "Printer on fire",
            "m1@customer.test",
            "",
            "Hello.",
        ),
    );
    imap.append(
        "Sales",
        &mail(
            "carol@customer.test",
            "sales@example.com",
            "A quote, please",
            "m2@customer.test",
            "",
            "Ten printers.",
        ),
    );
    let daemon = desk.start_with_env(&[("POSTDESK_TEST_OAUTH_SECRET", "s3cret")]);
    wait_until(30, "both mails taken and acknowledged", || {
        imap.count("INBOX") == 0 && imap.count("Sales") == 0 && smtp.received().len() == 2
    });
    // tok-1 was refused by Dovecot; a new token was got at once and taken.
    let by_dovecot = introspected(&idp, false);
    assert_eq!(by_dovecot.first().map(String::as_str), Some("tok-1"), "{by_dovecot:?}");
    let after: Vec<&String> = by_dovecot.iter().skip_while(|t| *t == "tok-1").collect();
    assert!(after.len() >= 2, "both mailboxes logged in after tok-1: {by_dovecot:?}");
    assert!(
        after.iter().all(|t| *t != "tok-1"),
        "tok-1 is never tried again: {by_dovecot:?}"
    );
    let log = daemon.log();
    assert!(log.contains("refused the oauth2 access token"), "{log}");

    // Tokens live two seconds: past that, the next use gets a new one first.
    let issued_before = state.lock().unwrap().issued;
    std::thread::sleep(std::time::Duration::from_secs(3));
    imap.append(
        "INBOX",
        &mail(
            "dave@customer.test",
            "support@example.com",
            "Scanner jammed",
            "m3@customer.test",
            "",
            "Hello again.",
        ),
    );
    wait_until(30, "the third acknowledgement", || smtp.received().len() == 3);
    let issued = state.lock().unwrap().issued;
    assert!(issued > issued_before, "no token got for the third mail");
    let by_sink = introspected(&idp, true);
    let last = by_sink.last().unwrap().clone();
    assert_eq!(last, format!("tok-{issued}"), "the sink saw {by_sink:?}");
    // Every refresh rotated the refresh token; the newest is on disk, private.
    assert_eq!(
        std::fs::read_to_string(&refresh_file).unwrap().trim(),
        state.lock().unwrap().refresh
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&refresh_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let t = desk.show(3);
    assert_eq!(t["subject"], "Scanner jammed");
    daemon.stop();

    // A revoked grant: the daemon says what to do, and mail waits.
    std::fs::write(&refresh_file, "refresh-revoked\n").unwrap();
    let daemon = desk.start_with_env(&[("POSTDESK_TEST_OAUTH_SECRET", "s3cret")]);
    daemon.wait(20, "the refusal in the log", || {
        daemon.log().contains("run postdesk oauth2 login idp")
    });
    daemon.stop();
}

#[test]
fn oauth2_login_runs_the_device_flow_and_keeps_the_refresh_token() {
    let idp = HttpReceiver::start();
    idp.reply(
        "/device",
        r#"{"device_code":"dev-123","user_code":"WDJB-MJHT","verification_uri":"https://example.com/device","interval":1,"expires_in":60}"#,
        std::time::Duration::ZERO,
    );
    let polls = Arc::new(Mutex::new(0u32));
    let p = polls.clone();
    idp.respond("/token", move |body| {
        let f = form(body);
        match f.get("grant_type").map(String::as_str) {
            Some("urn:ietf:params:oauth:grant-type:device_code")
                if f.get("device_code").map(String::as_str) == Some("dev-123") =>
            {
                let mut n = p.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    (400, r#"{"error":"authorization_pending"}"#.into())
                } else {
                    (
                        200,
                        r#"{"access_token":"at-1","expires_in":3600,"refresh_token":"granted-refresh"}"#.into(),
                    )
                }
            }
            Some("client_credentials") if f.get("client_secret").map(String::as_str) == Some("app-secret") => {
                (200, r#"{"access_token":"app-token","expires_in":3600}"#.into())
            }
            _ => (400, r#"{"error":"invalid_request"}"#.into()),
        }
    });
    let desk = DeskConfig::new()
        .extra(&format!(
            "[[oauth2]]\nname = \"google\"\ntoken_url = \"{}\"\ndevice_url = \"{}\"\nclient_id = \"desk-client\"\nscopes = [\"https://mail.google.com/\"]\n",
            idp.url("/token"),
            idp.url("/device")
        ))
        .extra(&format!(
            "[[oauth2]]\nname = \"m365app\"\nflow = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"app\"\nclient_secret_env = \"POSTDESK_TEST_APP_SECRET\"\nscopes = [\"https://outlook.office365.com/.default\"]\n",
            idp.url("/token")
        ))
        .build();
    let check = desk.run(&["check"]);
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("run postdesk oauth2 login google"),
        "check warns about the missing grant"
    );
    let out = desk.ok(&["oauth2", "login", "google"]);
    assert!(
        out.contains("open https://example.com/device and enter the code WDJB-MJHT"),
        "{out}"
    );
    assert!(out.contains("granted"), "{out}");
    assert_eq!(*polls.lock().unwrap(), 2, "polled until the grant");
    let device = idp.received().into_iter().find(|r| r.path == "/device").unwrap();
    let f = form(&device.body);
    assert_eq!(f["client_id"], "desk-client");
    assert_eq!(f["scope"], "https://mail.google.com/");
    let file = desk.dir.join("data/oauth2/google.refresh_token");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "granted-refresh\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // App-only access: nothing to grant, the credentials are proven.
    let out = desk
        .command()
        .args(["oauth2", "login", "m365app"])
        .env("POSTDESK_TEST_APP_SECRET", "app-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("client credentials work"));
    let wrong = desk
        .command()
        .args(["oauth2", "login", "m365app"])
        .env("POSTDESK_TEST_APP_SECRET", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("invalid_request"));

    let unknown = desk.run(&["oauth2", "login", "nosuch"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("no [[oauth2]] named \"nosuch\" (configured: google, m365app)"),
        "{err}"
    );
}

#[test]
fn bad_oauth2_settings_are_refused_with_where_and_why() {
    check_refuses(
        "[[oauth2]]\nname = \"a\"\ntoken_url = \"http://idp.example.com/token\"\nclient_id = \"c\"\nflow = \"password\"\n\n[[oauth2]]\nname = \"b\"\ntoken_url = \"https://idp.example.com/token\"\nclient_id = \"c\"\nflow = \"client_credentials\"\n",
        &[
            "oauth2 token_url \"http://idp.example.com/token\": an https:// address",
            "oauth2 flow \"password\": expected \"refresh_token\" or \"client_credentials\"",
            "needs client_secret_file or client_secret_env",
        ],
    );
    let desk = DeskConfig::new()
        .raw_mailbox(
            "[[mailbox]]\nname = \"m\"\naddress = \"m@example.com\"\nimap = { host = \"127.0.0.1\", tls = \"plain\", username = \"u\", auth = \"xoauth2\", oauth2 = \"nosuch\" }\n",
        )
        .no_outgoing()
        .extra("[outgoing]\nsmtp = { host = \"127.0.0.1\", tls = \"plain\", username = \"u\", auth = \"oauthbearer\", oauth2 = \"x\" }\n")
        .build();
    let out = desk.run(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in [
        "imap oauth2 = \"nosuch\": no such [[oauth2]]",
        "smtp auth \"oauthbearer\": expected \"password\" or \"xoauth2\"",
        "postdesk.toml:11:88: imap oauth2",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(err.lines().count(), 2, "one complaint each: {err}");
}

/// The query parameters of an address.
fn query(url: &str) -> HashMap<String, String> {
    form(url.split_once('?').map_or("", |(_, q)| q))
}

#[test]
fn oauth2_login_in_a_browser_takes_the_redirect_or_a_pasted_address_and_checks_state() {
    use std::io::{BufRead, Write};
    let idp = HttpReceiver::start();
    let challenge = Arc::new(Mutex::new(String::new()));
    let c = challenge.clone();
    idp.respond("/token", move |body| {
        let f = form(body);
        let verifier = f.get("code_verifier").cloned().unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
        let s256 = postdesk::core::outgoing::base64(digest.as_ref())
            .replace('+', "-")
            .replace('/', "_")
            .trim_end_matches('=')
            .to_string();
        let good = f.get("grant_type").map(String::as_str) == Some("authorization_code")
            && f.get("code").map(String::as_str) == Some("4/0Abc")
            && f.get("client_secret").map(String::as_str) == Some("desktop-secret")
            && f.get("redirect_uri")
                .is_some_and(|r| r.starts_with("http://127.0.0.1:"))
            && *c.lock().unwrap() == s256;
        if good {
            (
                200,
                r#"{"access_token":"at","expires_in":3599,"refresh_token":"1//browser-refresh"}"#.into(),
            )
        } else {
            (400, r#"{"error":"invalid_grant"}"#.into())
        }
    });
    let desk = DeskConfig::new()
        .extra(&format!(
            "[[oauth2]]\nname = \"gmail\"\nauth_url = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"desktop.apps.example\"\nclient_secret_env = \"POSTDESK_TEST_GOOGLE_SECRET\"\nscopes = [\"https://mail.google.com/\"]\n",
            idp.url("/auth"),
            idp.url("/token")
        ))
        .build();
    let file = desk.dir.join("data/oauth2/gmail.refresh_token");
    // Starts a login; the address it prints, and the running command.
    let start = || {
        let mut child = desk
            .command()
            .args(["oauth2", "login", "gmail"])
            .env("POSTDESK_TEST_GOOGLE_SECRET", "desktop-secret")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines
            .by_ref()
            .map(|l| l.unwrap())
            .find(|l| l.starts_with("http://"))
            .expect("the address to open");
        let q = query(&url);
        assert!(url.starts_with(&idp.url("/auth?")), "{url}");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "desktop.apps.example");
        assert_eq!(q["scope"], "https://mail.google.com/");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["access_type"], "offline");
        assert!(q["state"].len() >= 32);
        *challenge.lock().unwrap() = q["code_challenge"].clone();
        // The rest of its output read on, so that its next lines find the pipe open.
        std::thread::spawn(move || lines.for_each(drop));
        (child, q)
    };
    let redirect = |q: &HashMap<String, String>, state: &str| {
        let port: u16 = q["redirect_uri"]
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let (status, body) = crate::support::http_raw(
            port,
            &format!(
                "GET /?state={state}&code=4%2F0Abc&scope=https%3A%2F%2Fmail.google.com%2F HTTP/1.1\r\nHost: 127.0.0.1"
            ),
            b"",
        );
        assert_eq!(status, 200, "{body}");
    };

    // An answer with another state (a forged redirect) keeps nothing.
    let (child, q) = start();
    redirect(&q, "forged-state");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state is not this login's"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists());

    // The browser on this machine: the redirect reaches the login.
    let (child, q) = start();
    redirect(&q, &q["state"]);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "1//browser-refresh\n");
    std::fs::remove_file(&file).unwrap();

    // The browser elsewhere: the address it ended on, pasted.
    let (mut child, q) = start();
    writeln!(
        child.stdin.as_mut().unwrap(),
        "{}?state={}&code=4%2F0Abc&scope=x",
        q["redirect_uri"],
        q["state"]
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "1//browser-refresh\n");
}
