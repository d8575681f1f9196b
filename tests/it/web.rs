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
    form_token_of(port, "/new")
}

#[test]
fn a_customer_uses_the_portal_in_a_real_browser() {
    let smtp = Smtp::start();
    // With a proof of work: the form's script must find the answer the server checks.
    let desk = portal_desk(&smtp, "proof_of_work = 14\n");
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
    browser.click_to("button[type=submit]", "main h1");
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
    browser.click_to("button[type=submit]", "#sent");
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
    for (keys, wanted) in [
        (
            "login_link_lifetime = \"3d\"\nproof_of_work = 40\n",
            &[
                ":23: login_link_lifetime must be 10s to 1d",
                ":17: proof_of_work must be 0 (off) to 24",
            ][..],
        ),
        ("login_link_lifetime = \"soon\"\n", &["bad duration \"soon\""][..]),
    ] {
        let desk = DeskConfig::new()
            .extra(&format!("[web]\npublic_url = \"https://help.example.com\"\n{keys}"))
            .build();
        let err = String::from_utf8_lossy(&desk.run(&["check"]).stderr).into_owned();
        for w in wanted {
            assert!(err.contains(w), "{w}: {err}");
        }
    }

    let desk = DeskConfig::new().build();
    let daemon = desk.start();
    let port = desk.http_port;
    let (status, page) = http_raw(port, &format!("GET /new HTTP/1.1\nHost: 127.0.0.1:{port}"), b"");
    assert_eq!(status, 404);
    assert!(page.contains("by email only"), "{page}");
    daemon.stop();
}

/// The sign-in link in the latest sign-in mail to `agent`.
fn sign_in_link(smtp: &Smtp, agent: &str) -> String {
    let mails: Vec<String> = smtp
        .received_by(agent)
        .into_iter()
        .filter(|m| crate::support::header(m, "Subject").is_some_and(|s| s.starts_with("Sign in to")))
        .collect();
    let text = body_text(mails.last().expect("a sign-in mail"));
    text.lines()
        .find(|l| l.contains("/login/"))
        .expect("a link in the sign-in mail")
        .trim()
        .to_string()
}

const TEAM: &str = "[web]\npublic_url = \"{http_url}\"\nportal = true\ndashboard = true\n";

#[test]
fn an_agent_signs_in_by_mailed_link_and_works_a_ticket_in_a_real_browser() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(
            "[[agent]]\nname = \"Alice Jones\"\nemail = \"alice@example.com\"\nqueues = [\"general\"]\n\n[[agent]]\nname = \"Bert Brown\"\nemail = \"bert@example.com\"\nqueues = [\"general\"]\n\n[[queue]]\nname = \"general\"\nassign = \"none\"\n",
        )
        .extra(TEAM)
        .build();
    let daemon = desk.start();
    let base = format!("http://127.0.0.1:{}", desk.http_port);
    desk.ingest(&[&crate::support::mail(
        "Bob <bob@customer.test>",
        "support@example.com",
        "Invoice <b>missing</b>",
        "bob-1@customer.test",
        "",
        "Where is my invoice? <script>alert(1)</script>",
    )]);
    let browser = Browser::start("team");

    // No page without a session.
    browser.goto(&format!("{base}/dashboard"));
    assert!(browser.url().ends_with("/login"), "{}", browser.url());
    browser.screenshot("1-login");
    browser.fill("email", "alice@example.com");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    browser.click_to("button[type=submit]", "#notice");
    wait_until(20, "the sign-in mail", || {
        smtp.received_by("alice@example.com")
            .iter()
            .any(|m| crate::support::header(m, "Subject").is_some_and(|s| s.starts_with("Sign in to")))
    });
    let link = sign_in_link(&smtp, "alice@example.com");
    assert!(link.starts_with(&format!("{base}/login/")), "{link}");

    // Opening the link spends nothing; its button signs in.
    browser.goto(&link);
    browser.screenshot("2-confirm");
    browser.click_to("#sign-in", "#by-status");
    assert!(browser.url().ends_with("/dashboard"), "{}", browser.url());
    browser.screenshot("3-dashboard");
    assert_eq!(browser.text("#unassigned-count"), "1");
    assert_eq!(browser.texts("#by-status td"), ["1", "0", "0", "0", "0"]);
    assert!(browser.text("#unassigned").contains("Invoice <b>missing</b>"));
    // The charts are drawn on the server: four SVGs, the backlog's five ages.
    // A read that takes longer than the page waits goes on and shows on a refresh.
    let start = std::time::Instant::now();
    while browser.eval("return document.querySelectorAll('#charts-reading').length") == 1 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the charts never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        browser.goto(&format!("{base}/dashboard"));
    }
    assert_eq!(browser.eval("return document.querySelectorAll('svg.chart').length"), 4);
    assert_eq!(
        browser.eval("return document.querySelectorAll('#chart-backlog rect').length"),
        5
    );

    // The ticket: messages as text, then an action through the emailed commands' code.
    browser.click_to("#unassigned a", "#facts");
    browser.screenshot("4-ticket");
    assert!(
        browser
            .texts("article .text")
            .iter()
            .any(|t| t.contains("<script>alert(1)</script>"))
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('main script').length"),
        0
    );
    browser.select("assign", "Bert Brown");
    browser.select("status", "pending");
    browser.fill("text", "We are looking for your invoice.");
    browser.click_to("#act", "#done");
    browser.screenshot("5-acted");
    assert_eq!(browser.text("#fact-assignee"), "Bert Brown");
    assert_eq!(browser.text("#fact-status"), "pending");
    wait_until(20, "the relay to Bob", || {
        smtp.received_by("bob@customer.test")
            .iter()
            .any(|m| body_text(m).contains("We are looking for your invoice."))
    });
    let t = desk.show(1);
    let by_alice: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "Alice Jones")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["assigned", "status", "relayed"] {
        assert!(by_alice.contains(&kind), "{kind} by Alice: {by_alice:?}");
    }
    // A note stays internal.
    browser.fill("text", "Internal: check the billing export.");
    browser.click("#note");
    browser.click_to("#act", "#done");
    assert!(
        browser
            .texts("article.note .text")
            .iter()
            .any(|t| t == "Internal: check the billing export.")
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !smtp
            .received_by("bob@customer.test")
            .iter()
            .any(|m| body_text(m).contains("billing export")),
        "a note never reaches the customer"
    );

    // The list, filtered.
    browser.goto(&format!("{base}/dashboard/tickets?status=pending&assignee=Bert+Brown"));
    browser.screenshot("6-list");
    assert_eq!(browser.texts("#tickets td:first-child"), ["1"]);
    browser.goto(&format!("{base}/dashboard/tickets?status=open"));
    assert!(browser.texts("#tickets td:first-child").is_empty());
    for (query, rows) in [
        ("q=INVOICE+missing", 1),
        ("q=bob%40customer.test&priority=normal&channel=email", 1),
        ("q=refund", 0),
        ("channel=web", 0),
        ("priority=urgent", 0),
        ("tag=billing", 0),
    ] {
        browser.goto(&format!("{base}/dashboard/tickets?{query}"));
        assert_eq!(browser.texts("#tickets td:first-child").len(), rows, "{query}");
    }

    // The dashboard follows the desk: a new ticket shows without a reload.
    browser.goto(&format!("{base}/dashboard"));
    browser.wait_for("html[data-live=on]");
    browser.eval("window.sameDocument = true; return 1");
    // Read in one script call: the live update may swap the page between
    // finding an element and reading it.
    let read = |css: &str| browser.eval(&format!("return document.querySelector('{css}').textContent"));
    let unassigned = read("#unassigned-count");
    desk.ingest(&[&crate::support::mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Printer on fire",
        "carol-1@customer.test",
        "",
        "It is on fire.",
    )]);
    wait_until(20, "the dashboard to show the new ticket", || {
        read("#unassigned")
            .as_str()
            .is_some_and(|t| t.contains("Printer on fire"))
    });
    assert_eq!(
        browser.eval("return window.sameDocument === true"),
        true,
        "not reloaded"
    );
    assert_ne!(read("#unassigned-count"), unassigned);
    browser.screenshot("7-live");

    // Signing out ends the session; the spent link does not sign in again.
    browser.goto(&format!("{base}/dashboard"));
    browser.click_to("#logout", "#email");
    browser.goto(&format!("{base}/dashboard"));
    assert!(browser.url().ends_with("/login"), "{}", browser.url());
    browser.goto(&link);
    assert!(browser.text("#form-error").contains("not valid"));
    drop(browser);
    daemon.stop();
}

#[test]
fn the_team_pages_refuse_without_a_session_a_csrf_token_or_a_good_link() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(ALICE).extra(TEAM).build();
    let daemon = desk.start();
    let port = desk.http_port;
    desk.ingest(&[&crate::support::mail(
        "Bob <bob@customer.test>",
        "support@example.com",
        "Hello",
        "bob-1@customer.test",
        "",
        "Hi",
    )]);
    let req = |head: &str, body: &[u8]| http_raw(port, &format!("{head}\nHost: 127.0.0.1:{port}"), body);
    let before = desk.show(1)["status"].clone();
    let form = "Content-Type: application/x-www-form-urlencoded";
    for path in ["/dashboard", "/dashboard/tickets", "/dashboard/t/1"] {
        let (status, _) = req(&format!("GET {path} HTTP/1.1"), b"");
        assert_eq!(status, 303, "{path} without a session");
        let (status, _) = req(
            &format!("GET {path} HTTP/1.1\nCookie: pd_session=alicejones.9999999999.00.forged"),
            b"",
        );
        assert_eq!(status, 303, "{path} with a forged session");
    }
    let (status, _) = req(
        &format!("POST /dashboard/t/1 HTTP/1.1\n{form}"),
        b"text=hi&status=closed",
    );
    assert_eq!(status, 303);
    for cookie in ["", "\nCookie: pd_session=alicejones.9999999999.00.forged"] {
        let (status, body) = req(&format!("GET /dashboard/live HTTP/1.1{cookie}"), b"");
        assert_eq!((status, body.as_str()), (401, "sign in first: /login\n"), "{cookie}");
    }

    // A sign-in for an address that is no agent's: the same answer, no mail.
    let token = form_token_of(port, "/login");
    let (status, page) = req(
        &format!("POST /login HTTP/1.1\n{form}"),
        format!("email=mallory@evil.test&form_token={token}").as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(page.contains("If that address is an agent"), "{page}");
    let (status, _) = req(
        &format!("POST /login HTTP/1.1\n{form}"),
        format!("email=alice@example.com&form_token={token}").as_bytes(),
    );
    assert_eq!(status, 200);
    wait_until(20, "the sign-in mail", || {
        smtp.received_by("alice@example.com")
            .iter()
            .any(|m| crate::support::header(m, "Subject").is_some_and(|s| s.starts_with("Sign in to")))
    });
    assert!(smtp.received_by("mallory@evil.test").is_empty());
    let link = sign_in_link(&smtp, "alice@example.com");
    let path = link.split_once(&format!(":{port}")).unwrap().1.to_string();
    // Tampered links are refused, opening a link spends nothing, a spent link is refused.
    let mut tampered = path.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'a' { 'b' } else { 'a' });
    let other_agent = path.replacen("alicejones", "bertbrown", 1);
    for bad in [&tampered, &other_agent] {
        let (status, _) = req(&format!("POST {bad} HTTP/1.1\n{form}"), b"");
        assert_eq!(status, 403, "{bad}");
    }
    let (status, _) = req(&format!("GET {path} HTTP/1.1"), b"");
    assert_eq!(status, 200);
    let (status, head_and_body) = http_raw_head(port, &format!("POST {path} HTTP/1.1\nHost: 127.0.0.1:{port}\n{form}"));
    assert_eq!(status, 303, "{head_and_body}");
    let cookie_line = head_and_body
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie_line.contains(flag), "{cookie_line}");
    }
    let cookie = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (status, _) = req(&format!("POST {path} HTTP/1.1\n{form}"), b"");
    assert_eq!(status, 403, "a link works once");

    // With the session: pages answer; actions need the CSRF token; a foreign Origin is refused.
    let (status, page) = req(&format!("GET /dashboard/t/1 HTTP/1.1\nCookie: {cookie}"), b"");
    assert_eq!(status, 200, "{page}");
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = page[at..].split('"').next().unwrap().to_string();
    let (status, _) = req(
        &format!("POST /dashboard/t/1 HTTP/1.1\nCookie: {cookie}\n{form}"),
        b"status=closed",
    );
    assert_eq!(status, 403, "no CSRF token");
    let (status, _) = req(
        &format!("POST /dashboard/t/1 HTTP/1.1\nCookie: {cookie}\n{form}"),
        format!("csrf={csrf}x&status=closed").as_bytes(),
    );
    assert_eq!(status, 403, "a wrong CSRF token");
    let (status, _) = req(
        &format!("POST /dashboard/t/1 HTTP/1.1\nCookie: {cookie}\nOrigin: http://evil.test\n{form}"),
        format!("csrf={csrf}&status=closed").as_bytes(),
    );
    assert_eq!(status, 403, "a foreign origin");
    assert_eq!(desk.show(1)["status"], before, "nothing refused changed the ticket");
    // The live stream says when the desk changed, and ends when the session does.
    let live = LiveStream::open(port, &cookie);
    live.wait_for("event: ready");
    let (status, _) = req(
        &format!("POST /dashboard/t/1 HTTP/1.1\nCookie: {cookie}\n{form}"),
        format!("csrf={csrf}&status=closed").as_bytes(),
    );
    assert_eq!(status, 303);
    assert_eq!(desk.show(1)["status"], "closed");
    live.wait_for("event: changed");
    // Signed out, the same cookie is refused.
    let (status, _) = req(
        &format!("POST /logout HTTP/1.1\nCookie: {cookie}\n{form}"),
        format!("csrf={csrf}").as_bytes(),
    );
    assert_eq!(status, 303);
    let (status, _) = req(&format!("GET /dashboard HTTP/1.1\nCookie: {cookie}"), b"");
    assert_eq!(status, 303, "an ended session is refused");
    let said = live.end();
    assert!(said.contains("event: signed-out"), "{said}");
    let (status, _) = req(&format!("GET /dashboard/live HTTP/1.1\nCookie: {cookie}"), b"");
    assert_eq!(status, 401, "an ended session gets no live stream");
    daemon.stop();
}

/// `GET /dashboard/live` read on a thread of its own as it streams.
struct LiveStream {
    said: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl LiveStream {
    fn open(port: u16, cookie: &str) -> LiveStream {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET /dashboard/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let to = said.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                to.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        LiveStream { said, reader }
    }

    fn wait_for(&self, what: &str) {
        wait_until(20, what, || self.said.lock().unwrap().contains(what));
    }

    /// Waits for the server to end the stream; all it said.
    fn end(self) -> String {
        self.reader.join().unwrap();
        let said = self.said.lock().unwrap().clone();
        assert!(said.starts_with("HTTP/1.1 200"), "{said}");
        assert!(
            said.to_ascii_lowercase().contains("content-type: text/event-stream"),
            "{said}"
        );
        said
    }
}

/// A form token from the page at `path`, old enough to be taken.
fn form_token_of(port: u16, path: &str) -> String {
    let (status, page) = http_raw(port, &format!("GET {path} HTTP/1.1\nHost: 127.0.0.1:{port}"), b"");
    assert_eq!(status, 200, "{page}");
    let at = page.find("name=\"form_token\" value=\"").expect("the form has a token") + 25;
    let token = page[at..].split('"').next().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    token
}

/// A request with an empty body; the status and the whole answer, headers included.
fn http_raw_head(port: u16, head: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let req = format!(
        "{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        head.trim_end().replace('\n', "\r\n")
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, raw)
}

/// Signs Alice in over raw HTTP: the session cookie and a CSRF token from `/dashboard/t/1`.
/// Asks for Alice's sign-in link on `/login` and waits for its mail: the link's path.
fn mailed_sign_in_path(smtp: &Smtp, port: u16) -> String {
    let form = "Content-Type: application/x-www-form-urlencoded";
    let token = form_token_of(port, "/login");
    let (status, _) = http_raw(
        port,
        &format!("POST /login HTTP/1.1\nHost: 127.0.0.1:{port}\n{form}"),
        format!("email=alice@example.com&form_token={token}").as_bytes(),
    );
    assert_eq!(status, 200);
    wait_until(20, "the sign-in mail", || {
        smtp.received_by("alice@example.com")
            .iter()
            .any(|m| crate::support::header(m, "Subject").is_some_and(|s| s.starts_with("Sign in to")))
    });
    let link = sign_in_link(smtp, "alice@example.com");
    link.split_once(&format!(":{port}")).unwrap().1.to_string()
}

fn signed_in(smtp: &Smtp, port: u16) -> (String, String) {
    let form = "Content-Type: application/x-www-form-urlencoded";
    let path = mailed_sign_in_path(smtp, port);
    let (status, raw) = http_raw_head(port, &format!("POST {path} HTTP/1.1\nHost: 127.0.0.1:{port}\n{form}"));
    assert_eq!(status, 303, "{raw}");
    let cookie = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().split(';').next().unwrap().to_string())
        .expect("a session cookie");
    let (status, page) = http_raw(
        port,
        &format!("GET /dashboard/t/1 HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}"),
        b"",
    );
    assert_eq!(status, 200, "{page}");
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    (cookie, page[at..].split('"').next().unwrap().to_string())
}

/// The ticket numbers a dashboard list page links to, in order.
fn listed(page: &str) -> Vec<u64> {
    page.split("href=\"/dashboard/t/")
        .skip(1)
        .filter_map(|s| s.split('"').next()?.parse().ok())
        .collect()
}

#[test]
fn the_team_searches_the_text_of_messages_and_notes() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(ALICE).extra(TEAM).build();
    let daemon = desk.start();
    let port = desk.http_port;
    let mails = [
        (
            "Bob <bob@customer.test>",
            "Printer trouble",
            "The frobnicator jammed again on Monday.",
        ),
        (
            "Carol <carol@customer.test>",
            "Invoice",
            "Please send the invoice for March.",
        ),
        (
            "Dave <dave@customer.test>",
            "Hello",
            "Just saying hello, and thanks for the invoice.",
        ),
    ];
    let raws: Vec<String> = mails
        .iter()
        .enumerate()
        .map(|(i, (from, subject, body))| {
            crate::support::mail(
                from,
                "support@example.com",
                subject,
                &format!("m{i}@customer.test"),
                "",
                body,
            )
        })
        .collect();
    let with_file = "From: Erin <erin@customer.test>\r\nTo: support@example.com\r\nSubject: Router\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m9@customer.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nLog attached.\r\n--b\r\nContent-Type: text/plain; name=\"router-log.txt\"\r\nContent-Disposition: attachment; filename=\"router-log.txt\"\r\n\r\nE42 link down\r\n--b--\r\n";
    let mut all: Vec<&str> = raws.iter().map(String::as_str).collect();
    all.push(with_file);
    desk.ingest(&all);
    let (cookie, csrf) = signed_in(&smtp, port);
    let form = "Content-Type: application/x-www-form-urlencoded";
    let (status, _) = http_raw(
        port,
        &format!("POST /dashboard/t/2 HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}\n{form}"),
        format!("csrf={csrf}&note=on&text=Customer+is+on+the+zebracorn+plan").as_bytes(),
    );
    assert_eq!(status, 303);
    let search = |q: &str| {
        let (status, page) = http_raw(
            port,
            &format!("GET /dashboard/tickets?q={q} HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}"),
            b"",
        );
        assert_eq!(status, 200, "{q}: {page}");
        listed(&page)
    };
    // Words only a message body (or a note) holds are found once indexed.
    wait_until(30, "the note's word in the search", || search("zebracorn") == vec![2]);
    assert_eq!(search("frobnicator"), vec![1]);
    // A ticket changed after it was indexed is indexed again.
    let (status, _) = http_raw(
        port,
        &format!("POST /dashboard/t/1 HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}\n{form}"),
        format!("csrf={csrf}&note=on&text=Replaced+the+wombat+roller").as_bytes(),
    );
    assert_eq!(status, 303);
    wait_until(30, "the later note's word in the search", || {
        search("wombat") == vec![1]
    });
    assert_eq!(search("FROBNICATOR+monday"), vec![1], "every word, any case");
    assert_eq!(search("invoice"), vec![3, 2], "newest first, subject or body");
    assert_eq!(search("invoice+march"), vec![2]);
    assert_eq!(search("carol%40customer.test"), vec![2], "the requester's address");
    assert!(search("nowhere").is_empty());
    // Attachment names are searched; the ticket page links the file, for a session only.
    assert_eq!(search("router-log.txt"), vec![4]);
    let (_, page) = http_raw(
        port,
        &format!("GET /dashboard/t/4 HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}"),
        b"",
    );
    assert!(
        page.contains("href=\"/dashboard/t/4/a/0/0\" download>router-log.txt</a>"),
        "{page}"
    );
    let (status, raw) = http_raw_head(
        port,
        &format!("GET /dashboard/t/4/a/0/0 HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}"),
    );
    assert_eq!(status, 200, "{raw}");
    assert!(raw.contains("E42 link down"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: application/octet-stream"),
        "{raw}"
    );
    assert!(raw.contains("attachment; filename=\"router-log.txt\""), "{raw}");
    let (status, _) = http_raw_head(
        port,
        &format!("GET /dashboard/t/4/a/0/0 HTTP/1.1\nHost: 127.0.0.1:{port}"),
    );
    assert_eq!(status, 303, "no file without a session");
    for missing in ["/dashboard/t/4/a/0/1", "/dashboard/t/4/a/7/0", "/dashboard/t/99/a/0/0"] {
        let (status, _) = http_raw_head(
            port,
            &format!("GET {missing} HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}"),
        );
        assert_eq!(status, 404, "{missing}");
    }
    // Other filters apply to the hits.
    let (_, page) = http_raw(
        port,
        &format!("GET /dashboard/tickets?q=invoice&status=closed HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}"),
        b"",
    );
    assert!(listed(&page).is_empty(), "{page}");
    // Query syntax from outside is read leniently, never an error page.
    for q in [
        "%22unclosed",
        "text%3A%28",
        "%2A",
        "ticket%3A1",
        "%29%29%28%28",
        "a+AND+OR+NOT",
    ] {
        search(q);
    }
    // A bad cursor is a 400 with the reason.
    let (status, page) = http_raw(
        port,
        &format!("GET /dashboard/tickets?q=invoice&cursor=x HTTP/1.1\nHost: 127.0.0.1:{port}\nCookie: {cookie}"),
        b"",
    );
    assert_eq!(status, 400);
    assert!(page.contains("bad cursor"), "{page}");
    daemon.stop();

    // The index is derived: deleted, it is built again from the store at start.
    std::fs::remove_dir_all(desk.dir.join("data/search")).unwrap();
    let daemon = desk.start();
    wait_until(30, "the rebuilt index", || search("frobnicator") == vec![1]);
    assert_eq!(search("zebracorn"), vec![2]);
    daemon.stop();
}

#[test]
fn a_sign_in_link_expires_after_its_lifetime() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(ALICE)
        .extra(TEAM)
        .extra("login_link_lifetime = \"10s\"\n")
        .build();
    let daemon = desk.start();
    let port = desk.http_port;
    let form = "Content-Type: application/x-www-form-urlencoded";
    let (_, page) = http_raw(port, &format!("GET /login HTTP/1.1\nHost: 127.0.0.1:{port}"), b"");
    assert!(page.contains("within 10 seconds"), "{page}");
    let path = mailed_sign_in_path(&smtp, port);
    let mail = smtp.received_by("alice@example.com").pop().unwrap();
    assert!(body_text(&mail).contains("within 10 seconds"), "{mail}");
    let (status, _) = http_raw(port, &format!("GET {path} HTTP/1.1\nHost: 127.0.0.1:{port}"), b"");
    assert_eq!(status, 200, "fresh, the link shows its button");
    std::thread::sleep(std::time::Duration::from_secs(11));
    for method in ["GET", "POST"] {
        let (status, raw) = http_raw_head(
            port,
            &format!("{method} {path} HTTP/1.1\nHost: 127.0.0.1:{port}\n{form}"),
        );
        assert_eq!(status, 403, "{method} of an expired link: {raw}");
        assert!(raw.contains("has expired"), "{raw}");
        assert!(!raw.to_ascii_lowercase().contains("set-cookie: pd_session"), "{raw}");
    }
    daemon.stop();
}

/// The first answer to a proof-of-work challenge reaching `bits`.
fn work_answer(challenge: &str, bits: u32) -> String {
    (0u64..)
        .find(|n| {
            let d = ring::digest::digest(&ring::digest::SHA256, format!("{challenge}:{n}").as_bytes());
            let lead = u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]);
            lead.leading_zeros() >= bits
        })
        .unwrap()
        .to_string()
}

#[test]
fn the_portal_s_proof_of_work_is_checked_and_used_once() {
    let smtp = Smtp::start();
    let desk = portal_desk(&smtp, "proof_of_work = 10\n");
    let daemon = desk.start();
    let port = desk.http_port;
    let (status, raw) = http_raw_head(port, &format!("GET /new HTTP/1.1\nHost: 127.0.0.1:{port}"));
    assert_eq!(status, 200);
    let csp = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-security-policy:"))
        .expect("a policy")
        .to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    assert!(raw.contains("<script src=\"/static/pow.js\"></script>"), "{raw}");
    let (status, js) = http_raw(
        port,
        &format!("GET /static/pow.js HTTP/1.1\nHost: 127.0.0.1:{port}"),
        b"",
    );
    assert_eq!(status, 200);
    assert!(js.contains("function sha256"), "{js}");
    let challenge_of = |page: &str| {
        let at = page.find("name=\"pow_challenge\" value=\"").expect("a challenge") + 28;
        page[at..].split('"').next().unwrap().to_string()
    };
    let challenge = challenge_of(&raw);
    let token = form_token(port);
    let send = |challenge: &str, answer: &str| {
        post_form(
            port,
            "/new",
            "",
            &[
                ("form_token", token.as_str()),
                ("email", "bob@customer.test"),
                ("subject", "Broken"),
                ("message", "It is broken."),
                ("pow_challenge", challenge),
                ("pow", answer),
            ],
            &[],
        )
    };
    // No answer, a wrong one, a challenge changed to ask less: refused, the text kept.
    let answer = work_answer(&challenge, 10);
    let wrong = (0u64..)
        .map(|n| n.to_string())
        .find(|n| {
            let d = ring::digest::digest(&ring::digest::SHA256, format!("{challenge}:{n}").as_bytes());
            d.as_ref()[0] != 0
        })
        .unwrap();
    let mut parts: Vec<&str> = challenge.split('.').collect();
    parts[2] = "1";
    let weaker = parts.join(".");
    for (c, a, what) in [
        (challenge.as_str(), "", "no answer"),
        (challenge.as_str(), wrong.as_str(), "a wrong answer"),
        (weaker.as_str(), work_answer(&weaker, 1).as_str(), "a changed challenge"),
        ("", "", "no challenge"),
    ] {
        let (status, page) = send(c, a);
        assert_eq!(status, 403, "{what}: {page}");
        assert!(page.contains("did not finish"), "{what}: {page}");
        assert!(page.contains("It is broken."), "{what}: the text is kept");
        assert_ne!(challenge_of(&page), challenge, "{what}: a fresh challenge");
    }
    let (status, _) = http_raw(
        port,
        &format!("GET /api/tickets/1 HTTP/1.1\nHost: 127.0.0.1:{port}"),
        b"",
    );
    assert_eq!(status, 404, "nothing refused opened a ticket");
    // The right answer opens the ticket; the same answer again is refused.
    let (status, page) = send(&challenge, &answer);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Thank you"), "{page}");
    assert_eq!(desk.show(1)["subject"], "Broken");
    let (status, page) = send(&challenge, &answer);
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("sent already"), "{page}");
    let (status, page) = http_raw(
        port,
        &format!("GET /api/tickets/2 HTTP/1.1\nHost: 127.0.0.1:{port}"),
        b"",
    );
    assert_eq!(status, 404, "no second ticket: {page}");
    daemon.stop();
}

#[test]
fn behind_a_trusted_proxy_the_limits_count_the_forwarded_client() {
    let smtp = Smtp::start();
    let desk = portal_desk(
        &smtp,
        "new_per_ip_per_hour = 1\ntrusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n",
    );
    let daemon = desk.start();
    let port = desk.http_port;
    let token = form_token(port);
    let send = |forwarded: &str, email: &str| {
        post_form(
            port,
            "/new",
            &format!("X-Forwarded-For: {forwarded}"),
            &[
                ("form_token", token.as_str()),
                ("email", email),
                ("subject", "Broken"),
                ("message", "It is broken."),
            ],
            &[],
        )
        .0
    };
    assert_eq!(send("203.0.113.1", "a@customer.test"), 200);
    assert_eq!(send("203.0.113.2", "b@customer.test"), 200, "another client");
    assert_eq!(send("203.0.113.1", "c@customer.test"), 429, "the first client again");
    // A client's own entries left of the proxy's are not believed.
    assert_eq!(send("203.0.113.3, 203.0.113.1, 10.0.0.9", "d@customer.test"), 429);
    daemon.stop();

    let bad = DeskConfig::new()
        .extra("[web]\npublic_url = \"https://help.example.com\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n")
        .build();
    let err = String::from_utf8_lossy(&bad.run(&["check"]).stderr).into_owned();
    assert!(
        err.contains("trusted_proxies: \"10.0.0.0/33\" is not an address or network"),
        "{err}"
    );
}
