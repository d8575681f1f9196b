//! OAuth2 access tokens for mailboxes (`auth = "xoauth2"` or
//! `"oauthbearer"` with an `[[oauth2]]` provider), as Microsoft 365 and
//! Google Workspace want them where password logins are switched off.
//!
//! A token is got from the provider's token endpoint, with the refresh
//! token a user granted once (`postdesk oauth2 login NAME` runs the device
//! flow and keeps it in `refresh_token_file`) or with the client's own
//! credentials (Microsoft 365 app-only access). It is kept in this process
//! and got anew before it expires (within five minutes of it, or half its
//! life when that is shorter) and at once after a server refused it. A
//! provider that rotates refresh tokens gets the new one written back
//! (atomically, mode 0600). Requests are blocking: callers run them off the
//! async workers.

use crate::adapters::config::{OAuth2Flow, OAuth2Login, OAuth2Provider, Sasl, Secret};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long one request to the provider may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A token is got anew this long before it expires, at most.
const MARGIN: Duration = Duration::from_secs(300);

struct Cached {
    token: String,
    fresh_until: Instant,
}

/// Tokens by provider (name, endpoint and client: a reload that changes one starts afresh).
static TOKENS: LazyLock<Mutex<HashMap<String, Cached>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn key(p: &OAuth2Provider) -> String {
    format!("{}\n{}\n{}", p.name, p.token_url, p.client_id)
}

/// A fresh access token of `p`: the one kept, or a new one from the
/// provider. One caller at a time asks the provider, so IMAP and SMTP
/// sharing a provider make one request, not two.
pub fn access_token(p: &OAuth2Provider) -> Result<Secret, String> {
    let mut tokens = TOKENS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = tokens.get(&key(p))
        && Instant::now() < c.fresh_until
    {
        return Ok(Secret::new(c.token.clone()));
    }
    let answer = request_token(p)?;
    let life = answer.expires_in.unwrap_or(Duration::from_secs(3600));
    tokens.insert(
        key(p),
        Cached {
            token: answer.access_token.clone(),
            fresh_until: Instant::now() + life - MARGIN.min(life / 2),
        },
    );
    tracing::info!(provider = %p.name, expires_in_s = life.as_secs(), "oauth2 access token got");
    Ok(Secret::new(answer.access_token))
}

/// Forgets `token` after a server refused it: the next [`access_token`] asks the provider.
pub fn refused(p: &OAuth2Provider, token: &Secret) {
    let mut tokens = TOKENS.lock().unwrap_or_else(|e| e.into_inner());
    if tokens.get(&key(p)).is_some_and(|c| c.token == token.expose()) {
        tokens.remove(&key(p));
        tracing::warn!(provider = %p.name, "the server refused the oauth2 access token; getting a new one");
    }
}

/// The SASL initial response for `user` with `token`: XOAUTH2's
/// `user=…^Aauth=Bearer …^A^A` or RFC 7628's GS2 header and key/values.
pub fn sasl(login: &OAuth2Login, user: &str, host: &str, port: u16, token: &Secret) -> String {
    match login.mechanism {
        Sasl::Xoauth2 => format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose()),
        Sasl::OAuthBearer => {
            let user = user.replace('=', "=3D").replace(',', "=2C");
            format!(
                "n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
                token.expose()
            )
        }
    }
}

/// The SASL mechanism's name.
pub fn mechanism_name(login: &OAuth2Login) -> &'static str {
    match login.mechanism {
        Sasl::Xoauth2 => "XOAUTH2",
        Sasl::OAuthBearer => "OAUTHBEARER",
    }
}

struct TokenAnswer {
    access_token: String,
    expires_in: Option<Duration>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// POSTs a form to `url`; the JSON answer and its status.
fn post(url: &str, form: &[(&str, &str)]) -> Result<(u16, serde_json::Value), String> {
    let mut response = agent()
        .post(url)
        .header("Accept", "application/json")
        .send_form(form.iter().copied())
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let v = serde_json::from_str(&text).map_err(|_| format!("{url}: HTTP {status}, not a JSON answer"))?;
    Ok((status, v))
}

/// The provider's reason in an error answer (`error`, `error_description`).
fn reason(v: &serde_json::Value, status: u16) -> String {
    let code = v["error"].as_str().unwrap_or("no error code");
    let text = one_line(v["error_description"].as_str().unwrap_or(""));
    format!("HTTP {status}, {code}{}{text}", if text.is_empty() { "" } else { ": " })
}

/// The client's own fields of a token or device request.
fn client<'a>(p: &'a OAuth2Provider, secret: &'a Option<Secret>, form: &mut Vec<(&'a str, &'a str)>) {
    form.push(("client_id", &p.client_id));
    if let Some(s) = secret {
        form.push(("client_secret", s.expose()));
    }
}

fn client_secret(p: &OAuth2Provider) -> Result<Option<Secret>, String> {
    p.client_secret
        .as_ref()
        .map(|s| s.load().map_err(|e| format!("oauth2 {}: {e}", p.name)))
        .transpose()
}

fn request_token(p: &OAuth2Provider) -> Result<TokenAnswer, String> {
    let secret = client_secret(p)?;
    let scope = p.scopes.join(" ");
    let refresh = match p.flow {
        OAuth2Flow::RefreshToken => Some(read_refresh_token(p)?),
        OAuth2Flow::ClientCredentials => None,
    };
    let mut form = Vec::new();
    match &refresh {
        Some(r) => {
            form.push(("grant_type", "refresh_token"));
            form.push(("refresh_token", r.expose()));
        }
        None => form.push(("grant_type", "client_credentials")),
    }
    client(p, &secret, &mut form);
    if !scope.is_empty() {
        form.push(("scope", &scope));
    }
    let (status, v) = post(&p.token_url, &form)?;
    if !(200..300).contains(&status) {
        let why = reason(&v, status);
        return Err(match (p.flow, v["error"].as_str()) {
            (OAuth2Flow::RefreshToken, Some("invalid_grant")) => format!(
                "oauth2 {}: the provider refused the refresh token ({why}); run postdesk oauth2 login {}",
                p.name, p.name
            ),
            _ => format!("oauth2 {}: token endpoint: {why}", p.name),
        });
    }
    let answer = token_answer(p, &v)?;
    // A provider that rotates refresh tokens (Microsoft does) sends the next one.
    if let (Some(old), Some(new)) = (&refresh, v["refresh_token"].as_str())
        && !new.is_empty()
        && new != old.expose()
    {
        write_refresh_token(p, new)?;
        tracing::info!(provider = %p.name, "oauth2 refresh token rotated");
    }
    Ok(answer)
}

fn token_answer(p: &OAuth2Provider, v: &serde_json::Value) -> Result<TokenAnswer, String> {
    let Some(access_token) = v["access_token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(format!(
            "oauth2 {}: the token endpoint's answer has no access_token",
            p.name
        ));
    };
    if access_token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "oauth2 {}: the access token has spaces or control characters",
            p.name
        ));
    }
    let expires_in = v["expires_in"]
        .as_u64()
        .or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok()))
        .map(|s| Duration::from_secs(s.max(1)));
    Ok(TokenAnswer {
        access_token: access_token.to_string(),
        expires_in,
    })
}

fn read_refresh_token(p: &OAuth2Provider) -> Result<Secret, String> {
    crate::adapters::config::SecretSource::File(p.refresh_token_file.clone())
        .load()
        .map_err(|e| format!("oauth2 {}: {e}; run postdesk oauth2 login {}", p.name, p.name))
}

/// Writes the refresh token whole (a temporary file, synced, renamed), readable by us only.
fn write_refresh_token(p: &OAuth2Provider, token: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = &p.refresh_token_file;
    let fail = |e: std::io::Error| format!("oauth2 {}: cannot write {}: {e}", p.name, path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(format!("{token}\n").as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)?;
    }
    Ok(())
}

/// `postdesk oauth2 login NAME`: the device flow (RFC 8628). Asks the
/// provider for a code, tells the admin (`say`) where to enter it, polls
/// until the grant, and keeps the refresh token. For the client-credentials
/// flow there is nothing to grant: it gets one token to prove the settings.
pub fn login(p: &OAuth2Provider, say: &mut dyn FnMut(&str)) -> Result<(), String> {
    if p.flow == OAuth2Flow::ClientCredentials {
        request_token(p)?;
        say(&format!(
            "oauth2 {}: the client credentials work; no login is needed for flow = \"client_credentials\"",
            p.name
        ));
        return Ok(());
    }
    let Some(device_url) = &p.device_url else {
        return match &p.auth_url {
            Some(auth_url) => browser_login(p, auth_url, say),
            None => Err(format!(
                "oauth2 {}: set device_url (a device code, Microsoft) or auth_url (a browser, Google) to log in",
                p.name
            )),
        };
    };
    let secret = client_secret(p)?;
    let scope = p.scopes.join(" ");
    let mut form = Vec::new();
    client(p, &secret, &mut form);
    if !scope.is_empty() {
        form.push(("scope", &scope));
    }
    let (status, v) = post(device_url, &form)?;
    if !(200..300).contains(&status) {
        return Err(format!("oauth2 {}: device endpoint: {}", p.name, reason(&v, status)));
    }
    let text = |k: &str| {
        v[k].as_str()
            .map(|s| s.chars().filter(|c| !c.is_control()).collect::<String>())
    };
    let (Some(device_code), Some(user_code)) = (text("device_code"), text("user_code")) else {
        return Err(format!(
            "oauth2 {}: the device endpoint's answer has no device_code or user_code",
            p.name
        ));
    };
    // Google says verification_url.
    let Some(uri) = text("verification_uri").or_else(|| text("verification_url")) else {
        return Err(format!(
            "oauth2 {}: the device endpoint's answer has no verification_uri",
            p.name
        ));
    };
    let mut interval = Duration::from_secs(v["interval"].as_u64().unwrap_or(5).clamp(1, 60));
    let until = Instant::now() + Duration::from_secs(v["expires_in"].as_u64().unwrap_or(900).min(3600));
    say(&format!(
        "To let postdesk use this mailbox, open {uri} and enter the code {user_code}"
    ));
    say("Waiting for the grant…");
    loop {
        std::thread::sleep(interval);
        if Instant::now() > until {
            return Err(format!(
                "oauth2 {}: the code expired before it was entered; run the login again",
                p.name
            ));
        }
        let mut form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
        ];
        client(p, &secret, &mut form);
        let (status, v) = post(&p.token_url, &form)?;
        if (200..300).contains(&status) {
            return granted(p, &v, say);
        }
        match v["error"].as_str() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            _ => return Err(format!("oauth2 {}: {}", p.name, reason(&v, status))),
        }
    }
}

/// How long `login` waits for the browser.
const BROWSER_WAIT: Duration = Duration::from_secs(600);

/// The authorization-code flow with PKCE (RFC 7636) and a loopback
/// redirect (RFC 8252), as desktop mail clients log in to Google: prints
/// the address to open, takes the redirect on `127.0.0.1` or, when the
/// browser runs on another machine, the address it ended on pasted on
/// standard input; checks `state`, trades the code for the tokens.
fn browser_login(p: &OAuth2Provider, auth_url: &str, say: &mut dyn FnMut(&str)) -> Result<(), String> {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen on loopback: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let redirect = format!("http://127.0.0.1:{port}/");
    let verifier = format!("{}{}", super::nonce(), super::nonce());
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    let challenge = crate::core::outgoing::base64(digest.as_ref())
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string();
    let state = super::nonce();
    let enc = super::percent_encode;
    let url = format!(
        "{auth_url}{}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&code_challenge={challenge}&code_challenge_method=S256&access_type=offline&prompt=consent",
        if auth_url.contains('?') { '&' } else { '?' },
        enc(&p.client_id),
        enc(&redirect),
        enc(&p.scopes.join(" ")),
    );
    say("Open this address in a browser and sign in as the mailbox's user:");
    say(&url);
    say("If the browser is on another machine, the page it ends on does not load: paste that page's address here.");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let from_browser = tx.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = std::io::BufReader::new(&conn);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // The rest of the head, read so that closing does not reset the connection.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) && header.len() < 16 << 10 {}
            let target = line.split(' ').nth(1).unwrap_or("").to_string();
            if !target.contains("code=") && !target.contains("error=") {
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let page = "postdesk: done, you may close this page.\n";
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                )
                .as_bytes(),
            );
            if from_browser.send(target).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if (line.contains("code=") || line.contains("error=")) && tx.send(line.trim().to_string()).is_err() {
                return;
            }
        }
    });
    let got = rx.recv_timeout(BROWSER_WAIT).map_err(|_| {
        format!(
            "oauth2 {}: no answer from the browser in {} minutes",
            p.name,
            BROWSER_WAIT.as_secs() / 60
        )
    })?;
    let query = got.split_once('?').map_or(got.as_str(), |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    let param = |k: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| super::percent_decode(v))
    };
    if let Some(e) = param("error") {
        return Err(format!("oauth2 {}: the provider said {}", p.name, one_line(&e)));
    }
    if param("state").as_deref() != Some(state.as_str()) {
        return Err(format!(
            "oauth2 {}: the answer's state is not this login's; nothing kept",
            p.name
        ));
    }
    let Some(code) = param("code").filter(|c| !c.is_empty()) else {
        return Err(format!("oauth2 {}: the answer has no code", p.name));
    };
    let secret = client_secret(p)?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    client(p, &secret, &mut form);
    let (status, v) = post(&p.token_url, &form)?;
    if !(200..300).contains(&status) {
        return Err(format!("oauth2 {}: token endpoint: {}", p.name, reason(&v, status)));
    }
    granted(p, &v, say)
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Keeps the refresh token of a grant.
fn granted(p: &OAuth2Provider, v: &serde_json::Value, say: &mut dyn FnMut(&str)) -> Result<(), String> {
    token_answer(p, v)?;
    let Some(refresh) = v["refresh_token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(format!(
            "oauth2 {}: the grant came without a refresh token (Microsoft wants the offline_access scope)",
            p.name
        ));
    };
    write_refresh_token(p, refresh)?;
    say(&format!(
        "oauth2 {}: granted; the refresh token is in {}",
        p.name,
        p.refresh_token_file.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(mechanism: Sasl) -> OAuth2Login {
        OAuth2Login {
            provider: OAuth2Provider {
                name: "p".into(),
                token_url: "https://example.com/token".into(),
                device_url: None,
                auth_url: None,
                client_id: "c".into(),
                client_secret: None,
                scopes: Vec::new(),
                flow: OAuth2Flow::RefreshToken,
                refresh_token_file: "x".into(),
            },
            mechanism,
        }
    }

    #[test]
    fn sasl_responses_are_as_google_and_rfc_7628_write_them() {
        let t = Secret::new("ya29.abc".into());
        assert_eq!(
            sasl(
                &login(Sasl::Xoauth2),
                "someuser@example.com",
                "imap.example.com",
                993,
                &t
            ),
            "user=someuser@example.com\x01auth=Bearer ya29.abc\x01\x01"
        );
        assert_eq!(
            sasl(
                &login(Sasl::OAuthBearer),
                "a,b=c@example.com",
                "server.example.com",
                143,
                &t
            ),
            "n,a=a=2Cb=3Dc@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer ya29.abc\x01\x01"
        );
    }

    #[test]
    fn provider_errors_are_named_without_control_characters() {
        let v = serde_json::json!({"error": "invalid_grant", "error_description": "Token\nexpired"});
        assert_eq!(reason(&v, 400), "HTTP 400, invalid_grant: Tokenexpired");
        assert_eq!(reason(&serde_json::json!({}), 500), "HTTP 500, no error code");
    }
}
