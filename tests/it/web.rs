//! The customer portal: the `/new` form and the signed `/t/…` status pages,
//! in a real headless Chromium and as raw HTTP for the refusals.

use crate::browser::Browser;
use crate::servers::{Smtp, temp_dir};
use crate::support::{ALICE, Desk, DeskConfig, agent_reply, body_text, http_raw, notification_of, wait_until};

const WEB: &str = "[web]\npublic_url = \"{http_url}\"\nportal = true\n";

fn portal_desk(smtp: &Smtp, extra: &str) -> Desk {
    DeskConfig::new()
        .smtp(smtp.port)
        .agents(ALICE)
        .extra(WEB)
        .extra(extra)
        .build()
}

/// The status link in a mail to a customer.
fn status_link(mail: &str) -> String {
    let text = body_text(mail);
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "See your request and answer online:" {
            return lines.next().unwrap().trim().to_string();
        }
    }
    panic!("no status link in:\n{text}")
}

/// A `multipart/form-data` body: its content type and bytes.
fn multipart(fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----postdesktestboundary7MA4YWxk";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    for (file, data) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"{file}\"\r\nContent-Type: text/plain\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post_form(
    port: u16,
    path: &str,
    extra_headers: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &[u8])],
) -> (u16, String) {
    let (ct, body) = multipart(fields, files);
    http_raw(
        port,
        &format!("POST {path} HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: {ct}\n{extra_headers}"),
        &body,
    )
}

/// A fresh form token from `GET /new`, old enough to be taken.
fn form_token(port: u16) -> String {
    let (status, page) = http_raw(port, &format!("GET /new HTTP/1.1\nHost: 127.0.0.1:{port}"), b"");
    assert_eq!(status, 200, "{page}");
    let at = page.find("name=\"form_token\" value=\"").expect("the form has a token") + 25;
    let token = page[at..].split('"').next().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    token
}

#[test]
fn a_customer_uses_the_portal_in_a_real_browser() {
    let smtp = Smtp::start();
    let desk = portal_desk(&smtp, "");
    let daemon = desk.start();
    let base = format!("http://127.0.0.1:{}", desk.http_port);
    let browser = Browser::start("portal");

    // The form: a new request with an attachment and some script in it.
    browser.goto(&format!("{base}/new"));
    browser.screenshot("1-new");
    assert_eq!(browser.text("h1"), "New request");
    for (label, field) in [
        ("Your email address (required)", "email"),
        ("Subject (required)", "subject"),
    ] {
        assert_eq!(browser.text(&format!("label[for={field}]")), label);
    }
    let file = temp_dir("upload").join("printer-log.txt");
    std::fs::write(&file, "E42 paper jam\n").unwrap();
    browser.fill("name", "Bob Customer");
    browser.fill("email", "bob@customer.test");
    browser.fill("subject", "Printer broken");
    browser.fill(
        "message",
        "It prints nothing. <script>document.title='owned'</script><img src=x onerror=\"document.title='owned'\">",
    );
    browser.fill("attachment", file.to_str().unwrap());
    // A form sent faster than a person types is refused: take a person's time.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    browser.click("button[type=submit]");
    browser.wait_for("main h1");
    assert_eq!(browser.text("main h1"), "Thank you");
    let thanks = browser.source();
    assert!(!thanks.contains("Printer broken") && !thanks.contains("#1"), "{thanks}");
    browser.screenshot("2-thanks");

    // Routed and acknowledged like mail, with channel web; the ack carries the status link.
    wait_until(20, "the acknowledgement", || {
        !smtp.received_by("bob@customer.test").is_empty()
    });
    let ack = smtp.received_by("bob@customer.test").remove(0);
    let link = status_link(&ack);
    assert!(link.starts_with(&format!("{base}/t/1/")), "{link}");
    let ticket = desk.show(1);
    assert_eq!(ticket["channel"], "web");
    assert_eq!(ticket["assignee"], "Alice Jones");
    assert_eq!(ticket["messages"][0]["attachments"][0], "printer-log.txt");
    wait_until(20, "Alice's notification", || {
        smtp.received_by("alice@example.com")
            .iter()
            .any(|m| body_text(m).contains("It prints nothing"))
    });

    // The status page: the conversation as text, never as markup.
    browser.goto(&link);
    browser.screenshot("3-status");
    assert_eq!(browser.text("main h1"), "Printer broken");
    let texts = browser.texts("article .text");
    assert!(
        texts[0].contains("<script>document.title='owned'</script>"),
        "{texts:?}"
    );
    assert_eq!(browser.eval("return document.title"), "Request #1 · Example Support");
    assert_eq!(
        browser.eval("return document.querySelectorAll('main script, main img').length"),
        0
    );
    assert_eq!(browser.texts(".files a"), ["printer-log.txt"]);

    // The customer answers on the page; the assignee is told.
    browser.fill("message", "More detail: the model is X100.");
    browser.click("button[type=submit]");
    browser.wait_for("#sent");
    browser.screenshot("4-replied");
    assert!(
        browser
            .texts("article .text")
            .iter()
            .any(|t| t == "More detail: the model is X100.")
    );
    wait_until(20, "the assignee's notification of the web reply", || {
        smtp.received_by("alice@example.com")
            .iter()
            .any(|m| body_text(m).contains("the model is X100"))
    });
    let shown = desk.show(1);
    let web_messages = shown["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["channel"] == "web")
        .count();
    assert_eq!(web_messages, 2, "{shown:#}");

    // Alice writes an internal note and an answer by mail; only the answer shows.
    let notification = notification_of(&smtp, "alice@example.com", 1);
    desk.ingest(&[&agent_reply(
        "Alice Jones <alice@example.com>",
        &notification,
        "Mon, 23 Nov 2026 10:00:00 +0000",
        "note-1",
        "#note\nInternal: the X100 firmware is buggy.",
    )]);
    desk.ingest(&[&agent_reply(
        "Alice Jones <alice@example.com>",
        &notification,
        "Mon, 23 Nov 2026 10:05:00 +0000",
        "answer-1",
        "Please update the printer's firmware.",
    )]);
    wait_until(20, "the relay to Bob", || {
        smtp.received_by("bob@customer.test").len() >= 2
    });
    let relay = smtp.received_by("bob@customer.test").remove(1);
    assert_eq!(status_link(&relay), link, "the relay carries the same status link");
    browser.goto(&link);
    browser.screenshot("5-answered");
    let agent_texts = browser.texts("article.agent .text");
    assert_eq!(agent_texts, ["Please update the printer's firmware."]);
    assert!(
        browser
            .text("article.agent .author")
            .starts_with("Alice Jones via Example Support")
    );
    let page = browser.source();
    for secret in ["alice@example.com", "Internal: the X100", "[ref:"] {
        assert!(!page.contains(secret), "the page shows {secret:?}:\n{page}");
    }

    // The attachment downloads as a file, from the page's own link.
    let href = browser.eval("return document.querySelector('.files a').getAttribute('href')");
    let (status, data) = http_raw(
        desk.http_port,
        &format!(
            "GET {} HTTP/1.1\nHost: 127.0.0.1:{}",
            href.as_str().unwrap(),
            desk.http_port
        ),
        b"",
    );
    assert_eq!((status, data.as_str()), (200, "E42 paper jam\n"));
    drop(browser);
    daemon.stop();
}

#[test]
fn the_portal_refuses_what_it_should_and_shows_nothing_of_other_tickets() {
    let smtp = Smtp::start();
    let desk = portal_desk(&smtp, "[limits]\nmax_message_bytes = 200000\n");
    let daemon = desk.start();
    let port = desk.http_port;
    let fields = |token: &str, email: &'static str| {
        vec![
            ("form_token", token.to_string()),
            ("name", "Bob".to_string()),
            ("email", email.to_string()),
            ("subject", "Broken".to_string()),
            ("message", "It is broken.".to_string()),
        ]
    };
    let send = |f: &[(&str, String)], headers: &str, files: &[(&str, &[u8])]| {
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post_form(port, "/new", headers, &f, files)
    };

    // A form token is required, and not one fetched a moment ago.
    let (status, page) = send(&fields("", "bob@customer.test"), "", &[]);
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("The form is incomplete"), "{page}");
    let (_, fresh) = http_raw(port, &format!("GET /new HTTP/1.1\nHost: 127.0.0.1:{port}"), b"");
    let at = fresh.find("name=\"form_token\" value=\"").unwrap() + 25;
    let young = fresh[at..].split('"').next().unwrap().to_string();
    let (status, page) = send(&fields(&young, "bob@customer.test"), "", &[]);
    assert_eq!(status, 400);
    assert!(page.contains("That was quick"), "{page}");
    // A tampered token.
    let token = form_token(port);
    let (status, _) = send(&fields(&format!("{token}x"), "bob@customer.test"), "", &[]);
    assert_eq!(status, 400);

    // Bad addresses, our own address, another site's form, not a form.
    for (email, why) in [
        ("bob", "like name@example.com"),
        ("bob@customer.test>\r\nBcc: x@evil.test", "like name@example.com"),
        ("support@example.com", "not ours"),
    ] {
        let mut f = fields(&token, "x");
        f[2].1 = email.to_string();
        let (status, page) = send(&f, "", &[]);
        assert_eq!(status, 400, "{email}: {page}");
        assert!(page.contains(why), "{email}: {page}");
    }
    let (status, _) = send(&fields(&token, "bob@customer.test"), "Origin: http://evil.test\n", &[]);
    assert_eq!(status, 403);
    let (status, _) = http_raw(
        port,
        &format!("POST /new HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: application/x-www-form-urlencoded"),
        b"email=bob@customer.test",
    );
    assert_eq!(status, 415);
    // Too large for [limits] max_message_bytes.
    let big = vec![b'a'; 150_000];
    let (status, page) = send(&fields(&token, "bob@customer.test"), "", &[("big.txt", &big)]);
    assert_eq!(status, 413, "{page}");
    assert!(desk.tickets().is_empty(), "nothing refused was stored");

    // The honeypot: the robot sees thanks, nothing is stored.
    let mut robot = fields(&token, "robot@spam.test");
    robot.push(("website", "http://spam.test".into()));
    let (status, page) = send(&robot, "", &[]);
    assert_eq!(status, 200);
    assert!(page.contains("Thank you"), "{page}");
    assert!(desk.tickets().is_empty(), "the honeypot stores nothing");

    // Three requests an hour for one address (the default), then 429.
    for i in 0..3 {
        let (status, page) = send(&fields(&token, "carol@customer.test"), "", &[]);
        assert_eq!(status, 200, "request {i}: {page}");
    }
    let (status, page) = send(&fields(&token, "carol@customer.test"), "", &[]);
    assert_eq!(status, 429, "{page}");
    assert!(page.contains("Too many requests"), "{page}");

    // Ticket 1 is Carol's; ticket 2 is Dave's, by mail.
    desk.ingest(&[&crate::support::mail(
        "Dave <dave@customer.test>",
        "support@example.com",
        "Dave's secret matter",
        "dave-1@customer.test",
        "",
        "My account number is 123.",
    )]);
    let dave = desk
        .tickets()
        .iter()
        .find(|t| t["requester"]["email"] == "dave@customer.test")
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    wait_until(20, "Carol's acknowledgement", || {
        !smtp.received_by("carol@customer.test").is_empty()
    });
    let carol_link = status_link(&smtp.received_by("carol@customer.test")[0]);
    let path = carol_link.split_once(&format!("{port}")).unwrap().1.to_string();
    let (id, token) = path.trim_start_matches("/t/").split_once('/').unwrap();
    let get = |p: &str| http_raw(port, &format!("GET {p} HTTP/1.1\nHost: 127.0.0.1:{port}"), b"");
    let (status, page) = get(&path);
    assert_eq!(status, 200, "{page}");
    // Carol's token on Dave's number, a changed token, a token with nothing: nothing of any ticket.
    let mut changed = token.to_string();
    let last = changed.pop().unwrap();
    changed.push(if last == 'a' { 'b' } else { 'a' });
    for bad in [
        format!("/t/{dave}/{token}"),
        format!("/t/{id}/{changed}"),
        format!("/t/{id}/"),
        format!("/t/0/{token}"),
        format!("/t/99/{token}"),
    ] {
        let (status, page) = get(&bad);
        assert!(status == 404, "{bad}: {status}");
        assert!(
            !page.contains("Dave") && !page.contains("Broken") && !page.contains("123"),
            "{bad}: {page}"
        );
    }
    // A reply through a link is refused from another site, and with a tampered token.
    let (status, _) = post_form(port, &path, "Origin: http://evil.test\n", &[("message", "hi")], &[]);
    assert_eq!(status, 403);
    let (status, _) = post_form(port, &format!("/t/{dave}/{token}"), "", &[("message", "hi")], &[]);
    assert_eq!(status, 404);
    let (status, page) = post_form(port, &path, "", &[("message", "  ")], &[]);
    assert_eq!(status, 400, "{page}");
    let inbound = desk.show(dave)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .count();
    assert_eq!(inbound, 1, "only Dave's own mail is on his ticket");
    daemon.stop();
}

#[test]
fn the_portal_needs_a_public_url_and_is_off_by_default() {
    let desk = DeskConfig::new().extra("[web]\nportal = true\n").build();
    let out = desk.run(&["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("portal = true needs public_url"), "{err}");
    assert!(err.contains("postdesk.toml:"), "names the file and line: {err}");
    let desk = DeskConfig::new()
        .extra("[web]\npublic_url = \"ftp://help.example.com\"\n")
        .http("public_url = \"https://help.example.com\"")
        .build();
    let err = String::from_utf8_lossy(&desk.run(&["check"]).stderr).into_owned();
    assert!(err.contains("public_url is set in [http] already"), "{err}");
    assert!(err.contains("must be an http:// or https:// address"), "{err}");

    let desk = DeskConfig::new().build();
    let daemon = desk.start();
    let port = desk.http_port;
    let (status, page) = http_raw(port, &format!("GET /new HTTP/1.1\nHost: 127.0.0.1:{port}"), b"");
    assert_eq!(status, 404);
    assert!(page.contains("by email only"), "{page}");
    daemon.stop();
}
