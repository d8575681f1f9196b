//! Webhooks, received by the test's own HTTP server: signatures, order per
//! ticket, retries across a daemon restart, failures kept, listed and retried,
//! and the Slack format.

use crate::servers::{HttpReceiver, Received, Smtp, temp_dir};
use crate::support::{ALICE, DeskConfig, check_refuses, mail, wait_until};
use serde_json::Value;

const SECRET: &str = "whsec-test-0123456789abcdef";

/// The signature header's parts, checked against the body with the secret.
fn verified(r: &Received, secret: &str) -> bool {
    let Some(sig) = r.header("x-postdesk-signature") else {
        return false;
    };
    let (Some(t), Some(v1)) = (
        sig.split(',').find_map(|p| p.strip_prefix("t=")),
        sig.split(',').find_map(|p| p.strip_prefix("v1=")),
    ) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let Ok(tag) = (0..v1.len() / 2)
        .map(|i| u8::from_str_radix(&v1[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    ring::hmac::verify(&key, format!("{t}.{}", r.body).as_bytes(), &tag).is_ok()
}

fn event(r: &Received) -> (u64, String) {
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (
        v["ticket"]["id"].as_u64().unwrap_or(0),
        v["event"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn webhooks_are_signed_ordered_per_ticket_retried_across_a_restart_and_kept_when_they_fail() {
    let smtp = Smtp::start();
    let hooks = HttpReceiver::start();
    let secret = temp_dir("hook-secret").join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let config = format!(
        "[[webhook]]\nname = \"chat\"\nurl = \"{}\"\nevents = [\"ticket.created\", \"message.inbound\"]\nsecret_file = \"{}\"\nattempts = 4\nbackoff = \"1s\"\n\n[[webhook]]\nurl = \"{}\"\nevents = [\"ticket.created\"]\nformat = \"slack\"\n",
        hooks.url("/chat"),
        secret.display(),
        hooks.url("/slack")
    );
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(ALICE)
        .http("public_url = \"https://help.example.com\"")
        .extra("[web]\ndashboard = true\n")
        .extra(&config)
        .build();
    hooks.answer("/chat", 500);
    let daemon = desk.start();
    desk.ingest(&[
        &mail(
            "Bob <bob@customer.test>",
            "support@example.com",
            "Printer <b>broken</b> & more",
            "b1@customer.test",
            "",
            "It prints nothing.",
        ),
        &mail(
            "Carol <carol@customer.test>",
            "support@example.com",
            "Invoice",
            "c1@customer.test",
            "",
            "Where is it?",
        ),
    ]);
    let chat = || -> Vec<Received> { hooks.received().into_iter().filter(|r| r.path == "/chat").collect() };
    // The receiver fails: each ticket's first delivery is retried, and its
    // later one waits behind it.
    wait_until(30, "retried deliveries", || chat().len() >= 4);
    let before_restart = chat();
    for r in &before_restart {
        assert_eq!(
            event(r).1,
            "ticket.created",
            "nothing overtakes a delivery being retried: {}",
            r.body
        );
        assert!(verified(r, SECRET), "signed: {:?}", r.headers);
    }
    daemon.stop();

    // The receiver is back; the daemon, restarted, delivers what is queued, in order per ticket.
    hooks.answer("/chat", 200);
    let daemon = desk.start();
    let accepted = || -> Vec<Received> { chat().into_iter().filter(|r| r.status == 200).collect() };
    wait_until(30, "the queued deliveries", || accepted().len() >= 4);
    let got = accepted();
    assert_eq!(got.len(), 4, "each delivery once: {got:?}");
    for ticket in [1, 2] {
        let events: Vec<String> = got
            .iter()
            .map(event)
            .filter(|(t, _)| *t == ticket)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(events, ["ticket.created", "message.inbound"], "ticket {ticket}");
    }
    let now = jiff::Timestamp::now().as_second();
    let mut ids = std::collections::HashSet::new();
    for r in &got {
        // Signed over timestamp and body: a changed body or timestamp no longer verifies.
        assert!(verified(r, SECRET), "{:?}", r.headers);
        let mut tampered = r.clone();
        tampered.body = r
            .body
            .replacen("Invoice", "Invoicf", 1)
            .replacen("Printer", "Printes", 1);
        assert!(!verified(&tampered, SECRET), "a tampered body is detected");
        let sig = r.header("x-postdesk-signature").unwrap();
        let t: i64 = sig
            .split(',')
            .find_map(|p| p.strip_prefix("t="))
            .unwrap()
            .parse()
            .unwrap();
        let mut replayed = r.clone();
        let old = sig.replacen(&format!("t={t}"), &format!("t={}", t - 3600), 1);
        replayed.headers.retain(|(k, _)| k != "x-postdesk-signature");
        replayed.headers.push(("x-postdesk-signature".into(), old));
        assert!(
            !verified(&replayed, SECRET),
            "a replay with an older timestamp does not verify"
        );
        assert!(
            (now - t).abs() < 300,
            "the timestamp is the sending time: a receiver refuses old ones"
        );
        assert!(!verified(r, "another secret"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(r.header("x-postdesk-event"), v["event"].as_str());
        assert_eq!(r.header("x-postdesk-delivery"), v["id"].as_str());
        assert!(
            ids.insert(v["id"].as_str().unwrap().to_string()),
            "delivery ids are unique"
        );
        assert!(v["created_at"].is_string() && v["data"]["kind"].is_string(), "{v}");
    }
    let created: Value = serde_json::from_str(
        &got.iter()
            .find(|r| event(r) == (1, "ticket.created".into()))
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(created["ticket"]["subject"], "Printer <b>broken</b> & more");
    assert_eq!(created["ticket"]["requester"]["email"], "bob@customer.test");
    assert_eq!(created["ticket"]["url"], "https://help.example.com/dashboard/t/1");

    // Slack's incoming-webhook payload: a JSON object with `text`, `&`, `<`
    // and `>` escaped, a link as <url|label>; unsigned without a secret.
    let slack: Vec<Received> = hooks.received().into_iter().filter(|r| r.path == "/slack").collect();
    assert_eq!(slack.len(), 2, "{slack:?}");
    let v: Value = serde_json::from_str(&slack[0].body).unwrap();
    let text = v["text"].as_str().expect("a text field");
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert!(
        text.contains("#1 Printer &lt;b&gt;broken&lt;/b&gt; &amp; more"),
        "{text}"
    );
    assert!(
        text.contains("<https://help.example.com/dashboard/t/1|Open ticket>"),
        "{text}"
    );
    assert!(text.contains("New ticket from Bob"), "{text}");
    assert!(slack[0].header("x-postdesk-signature").is_none());

    // Failing for good: kept, listed, and sent again on request.
    hooks.answer("/chat", 500);
    desk.ingest(&[&mail(
        "Dave <dave@customer.test>",
        "support@example.com",
        "Login",
        "d1@customer.test",
        "",
        "Cannot log in.",
    )]);
    let failed = || -> Vec<Value> { serde_json::from_str(&desk.ok(&["webhooks", "--failed", "--json"])).unwrap() };
    wait_until(60, "both deliveries of ticket 3 to fail for good", || {
        failed().len() == 2
    });
    let f = failed();
    assert_eq!(f[0]["event"], "ticket.created");
    assert_eq!(f[1]["event"], "message.inbound");
    for e in &f {
        assert_eq!(e["ticket"], 3);
        assert_eq!(e["attempts"], 4);
        assert_eq!(e["last_error"], "HTTP 500");
        assert_eq!(e["hook"], "chat");
    }
    let tried = chat().iter().filter(|r| event(r).0 == 3).count();
    assert_eq!(tried, 8, "four attempts each, no more");
    assert!(desk.ok(&["webhooks", "--failed"]).contains("HTTP 500"));
    let out = desk.run(&["webhooks", "--retry", "dlv_nosuchdelivery"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no failed delivery dlv_nosuchdelivery"));
    hooks.answer("/chat", 200);
    assert!(
        desk.ok(&["webhooks", "--retry"])
            .contains("2 failed deliveries queued again")
    );
    wait_until(30, "the retried deliveries", || {
        accepted().iter().filter(|r| event(r).0 == 3).count() == 2
    });
    let order: Vec<String> = accepted()
        .iter()
        .map(event)
        .filter(|(t, _)| *t == 3)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(order, ["ticket.created", "message.inbound"]);
    assert!(
        desk.ok(&["webhooks", "--failed"])
            .contains("no failed webhook deliveries")
    );
    daemon.stop();
}

#[test]
fn webhook_config_is_checked() {
    check_refuses(
        "[[webhook]]\nurl = \"ftp://x.test\"\nevents = [\"ticket.exploded\"]\nformat = \"xml\"\n",
        &[
            "webhook url must be an http:// or https:// address",
            "unknown webhook event \"ticket.exploded\"",
            "webhook format \"xml\"",
        ],
    );
    check_refuses(
        "[[webhook]]\nurl = \"https://x.test/h\"\nevents = [\"*\"]\n",
        &["the json format needs secret_file or secret_env", "postdesk.toml:"],
    );
}
